"""Extract a layer tar into a directory in overlay form, safe against hostile archives.

Every path is walked component by component from a directory fd with O_NOFOLLOW, so no
symlink inside the tree is ever followed; `..`, absolute names, writes through symlinks,
hard links to anything outside the layer, and (unless `trusted`) device nodes are refused with
`UnsafeLayer` naming the entry. Whiteouts become overlay whiteouts: `.wh.NAME` a 0/0 character
device, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. Ownership is
kept numerically; `trusted.overlay.*` xattrs from the archive are dropped so a layer cannot
forge overlay metadata. The caller owns the directory and removes it on failure.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from typing import BinaryIO

from carte.image.errors import UnsafeLayer
from carte.image.sparse_files import ShortData, write_regions

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_PAX_XATTR = "SCHILY.xattr."
_FORBIDDEN_XATTR_PREFIX = "trusted.overlay."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


def split_entry_name(name: str) -> list[str]:
    """The components of a tar entry name; raises `UnsafeLayer` for absolute or `..` names."""
    if name.startswith("/"):
        raise UnsafeLayer(f'layer entry "{name}" has an absolute path; refusing the layer')
    if "\0" in name:
        raise UnsafeLayer(f"layer entry {name!r} contains a NUL byte; refusing the layer")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f'layer entry "{name}" contains ".."; refusing the layer')
    return parts


class LayerExtractor:
    """Extracts one tar stream into `root_fd`'s directory; use `extract()` once, then `close()`."""

    def __init__(self, root: str, *, trusted: bool) -> None:
        self._root_fd = os.open(root, _DIR_FLAGS)
        self._trusted = trusted
        self._dir_times: list[tuple[list[str], int]] = []
        # The last parent directory walked to (consecutive entries mostly share one): its
        # components and an fd. Forgotten whenever a directory is removed from the tree.
        self._last_parent: tuple[list[str], int] | None = None

    def close(self) -> None:
        self._forget_parent()
        os.close(self._root_fd)

    def _forget_parent(self) -> None:
        if self._last_parent is not None:
            os.close(self._last_parent[1])
            self._last_parent = None

    def extract(self, stream: BinaryIO) -> None:
        """Apply every entry of the tar `stream`; raises `UnsafeLayer` or `tarfile.TarError`."""
        forward = _Forward(stream)
        with tarfile.open(fileobj=forward, mode="r:", errorlevel=2) as archive:  # type: ignore[call-overload]
            for member in archive:
                self._apply(archive, member)
                archive.members.clear()  # read once, in order: nothing looks members up
        for parts, mtime_ns in reversed(self._dir_times):
            try:
                parent = self._walk(parts, member_name="/".join(parts), create=False)
            except FileNotFoundError:
                continue  # removed by a later whiteout in the same layer
            try:
                os.utime(parts[-1], ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)

    def _apply(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = split_entry_name(member.name)
        if not parts:
            return
        base = parts[-1]
        parent = self._walk(parts, member.name, create=True)
        try:
            if base == OPAQUE_MARKER:
                os.setxattr(parent, OPAQUE_XATTR, b"y")
            elif base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
                return  # other aufs metadata (.wh..wh.plnk and friends) means nothing here
            elif base.startswith(WHITEOUT_PREFIX):
                hidden = base.removeprefix(WHITEOUT_PREFIX)
                if hidden in ("", ".", ".."):
                    raise UnsafeLayer(f'layer entry "{member.name}" is not a valid whiteout')
                self._remove(parent, hidden)
                os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
            else:
                self._create(archive, member, parent, base)
        finally:
            os.close(parent)

    def _walk(self, parts: list[str], member_name: str, *, create: bool) -> int:
        """An fd for the directory holding `parts[-1]`, never following a symlink on the way."""
        if self._last_parent is not None and self._last_parent[0] == parts[:-1]:
            return os.dup(self._last_parent[1])
        fd = self._walk_from_root(parts, member_name, create=create)
        self._forget_parent()
        self._last_parent = (parts[:-1], os.dup(fd))
        return fd

    def _walk_from_root(self, parts: list[str], member_name: str, *, create: bool) -> int:
        fd = os.dup(self._root_fd)
        try:
            for component in parts[:-1]:
                try:
                    child = os.open(component, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(component, 0o755, dir_fd=fd)
                    child = os.open(component, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeLayer(
                            f'layer entry "{member_name}" goes through "{component}", which is a '
                            "symlink or not a directory; refusing the layer"
                        ) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, parent: int, base: str
    ) -> None:
        if member.isdir():
            if not _is_dir(parent, base):
                self._remove(parent, base)
                os.mkdir(base, 0o700, dir_fd=parent)
        else:
            self._remove(parent, base)
        if member.isreg():
            self._write_file(archive, member, parent, base)
            return  # its metadata was set through the open file
        elif member.issym():
            if "\0" in member.linkname:
                raise UnsafeLayer(
                    f'layer entry "{member.name}" is a symlink whose target contains a NUL byte'
                )
            os.symlink(member.linkname, base, dir_fd=parent)
        elif member.islnk():
            self._link(member, parent, base)
            return  # a hard link shares its target's inode and metadata
        elif member.ischr() or member.isblk():
            if not self._trusted:
                raise UnsafeLayer(
                    f'layer entry "{member.name}" is a device node, which only locally built '
                    "images may contain; refusing the layer"
                )
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(
                base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent
            )
        elif member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=parent)
        elif not member.isdir():
            raise UnsafeLayer(
                f'layer entry "{member.name}" has unsupported tar type {member.type!r}'
            )
        self._set_metadata(member, parent, base)

    def _write_file(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, parent: int, base: str
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        # Made with its permission bits (the layer's temp directory is private to root), so the
        # usual file, 0644 or 0755 under the daemon's umask, needs no chmod afterwards.
        mode = stat.S_IMODE(member.mode)
        fd = os.open(base, flags, mode & 0o777, dir_fd=parent)
        # Straight from the tar stream (extractfile's readers cost several copies per chunk),
        # keeping holes: a sparse member's data regions, all-zero blocks of any member.
        regions = member.sparse if member.issparse() else [(0, member.size)]
        try:
            write_regions(fd, archive.fileobj, regions or [], member.size)  # type: ignore[arg-type]
            # The metadata through the open fd, as _set_metadata does by name (chown first: it
            # clears set-id bits and capabilities), saving five path lookups per file; owner
            # and mode only where they differ from what the create gave (each is a journaled
            # inode change, and most files of a root filesystem are root's already).
            made = os.fstat(fd)
            if (made.st_uid, made.st_gid) != (member.uid, member.gid):
                os.fchown(fd, member.uid, member.gid)
            for key, value in _xattrs(member).items():
                os.setxattr(fd, key, value)
            if stat.S_IMODE(made.st_mode) != mode:
                os.fchmod(fd, mode)
            mtime_ns = int(member.mtime * 1_000_000_000)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        except ShortData:
            raise tarfile.ReadError(f'layer entry "{member.name}" is cut short') from None
        finally:
            os.close(fd)

    def _remove(self, parent: int, name: str) -> None:
        if _remove(parent, name):
            self._forget_parent()  # the walked-to directory may have been in what went

    def _link(self, member: tarfile.TarInfo, parent: int, base: str) -> None:
        refusal = UnsafeLayer(
            f'layer entry "{member.name}" is a hard link to "{member.linkname}", which is not a '
            "file earlier in the same layer; refusing the layer"
        )
        try:
            target_parts = split_entry_name(member.linkname)
        except UnsafeLayer:
            raise refusal from None
        if not target_parts:
            raise refusal
        try:
            target_parent = self._walk(target_parts, member.name, create=False)
        except FileNotFoundError:
            raise refusal from None
        try:
            os.link(
                target_parts[-1],
                base,
                src_dir_fd=target_parent,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise refusal from None
        finally:
            os.close(target_parent)

    def _set_metadata(self, member: tarfile.TarInfo, parent: int, base: str) -> None:
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        mtime_ns = int(member.mtime * 1_000_000_000)
        if member.issym():
            os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
            return
        handle = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            proc_path = f"/proc/self/fd/{handle}"
            for key, value in _xattrs(member).items():
                os.setxattr(proc_path, key, value)
            # chmod after chown: chown clears set-id bits.
            os.chmod(proc_path, stat.S_IMODE(member.mode))
        finally:
            os.close(handle)
        if member.isdir():
            parts = split_entry_name(member.name)
            self._dir_times.append((parts, mtime_ns))
        else:
            os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith(_PAX_XATTR):
            name = key.removeprefix(_PAX_XATTR)
            if not name.startswith(_FORBIDDEN_XATTR_PREFIX):
                found[name] = value.encode("utf-8", "surrogateescape")
    return found


def _is_dir(parent: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _remove(parent: int, name: str) -> bool:
    """Remove whatever is at `name` (never following a symlink); nothing there is fine.

    True if it was a directory."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        shutil.rmtree(name, dir_fd=parent)
        return True
    os.unlink(name, dir_fd=parent)
    return False


class _Forward:
    """A forward-only reader over `source` for tarfile's seekable mode ("r:"): small reads are
    sliced from a 1 MiB buffer (tarfile's stream mode copies its whole buffer's rest on every
    512-byte header read, about half the CPU of extracting a root filesystem), and `seek`
    only moves ahead, reading what it skips, so everything read passes through `source` once,
    in order (a hashing or copying reader sees the whole stream)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._buffer = b""
        self._start = 0  # where the unread part of the buffer starts
        self._position = 0  # in the stream

    def read(self, size: int = -1) -> bytes:
        available = len(self._buffer) - self._start
        if 0 <= size <= available:
            data = self._buffer[self._start : self._start + size]
            self._start += size
        else:
            parts = [self._buffer[self._start :]]
            self._buffer, self._start = b"", 0
            wanted = size - available
            while size < 0 or wanted > 0:
                chunk = self._source.read(_CHUNK)
                if not chunk:
                    break
                if 0 <= size and wanted < len(chunk):
                    parts.append(chunk[:wanted])
                    self._buffer, self._start = chunk, wanted
                    break
                parts.append(chunk)
                wanted -= len(chunk)
            data = b"".join(parts)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._position
        if whence == os.SEEK_END or offset < self._position:
            raise tarfile.ReadError("the layer tar would have to be read backwards")
        while offset > self._position:
            if not self.read(min(_CHUNK, offset - self._position)):
                break  # past the end: tarfile's next read finds nothing
        return self._position
