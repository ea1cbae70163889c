"""`carte cp`: tar streams of a container's files, out of it and into it, never leaving its root.

The container's root is the live one of a running (or paused) container, `/proc/PID/root`,
which includes its volumes and binds; a created or stopped container's overlay is mounted for
the moment under the run root (its volumes are then not included). Every path is resolved
with `carte.runtime.paths` (openat2 RESOLVE_IN_ROOT), so `..` and symlinks, absolute or not,
stay inside the container; the last component is never followed (a symlink is copied as one)
and entries are created one plain component at a time with O_NOFOLLOW.

Blocking: run these in a worker thread. Errors are `CarteError`s naming the path.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from carte.api.containers import ContainerLocation
from carte.api.errors import Conflict, InvalidArgument, NotFound
from carte.runtime.paths import fd_path, open_in_root

_CHUNK = 1 << 20


@contextmanager
def container_root(location: ContainerLocation, scratch: Path) -> Iterator[int]:
    """An O_PATH fd of the container's root for the block. Raises `Conflict` if a running
    container vanished meanwhile; `Internal` (an OSError) if the overlay cannot be mounted."""
    if location.status in ("running", "paused") and location.pid:
        fd = _live_root(location)
        try:
            yield fd
        finally:
            os.close(fd)
        return
    from carte.runtime.syscalls import MNT_DETACH, mount, umount2

    options = _overlay_options(Path(location.bundle) / "config.json")
    scratch.mkdir(parents=True, exist_ok=True)
    target = tempfile.mkdtemp(prefix=f"cp-{location.id[:12]}-", dir=scratch)
    try:
        mount("overlay", target, "overlay", 0, options)
        try:
            fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                yield fd
            finally:
                os.close(fd)
        finally:
            umount2(target, MNT_DETACH)
    finally:
        os.rmdir(target)


def _live_root(location: ContainerLocation) -> int:
    """/proc/PID/root of the container's process, checked to still be in its cgroup (a pid
    reused by another process after the container exited is not its root)."""
    try:
        fd = os.open(f"/proc/{location.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        with open(f"/proc/{location.pid}/cgroup") as cgroups:
            ours = location.id in cgroups.read()
    except OSError:
        ours, fd = False, -1
    if not ours:
        if fd >= 0:
            os.close(fd)
        raise Conflict(f'container "{location.name}" stopped meanwhile; run the copy again')
    return fd


def _overlay_options(config_path: Path) -> str:
    from carte.runtime.spec import load_spec

    spec = load_spec(config_path)
    for mount in spec.mounts:
        if mount.destination == "/" and mount.type == "overlay":
            return ",".join(mount.options)
    raise NotFound(f"{config_path} has no overlay root; the container cannot be copied from")


def _split(path: str) -> tuple[str, str]:
    """(parent, last component) of a path inside the container; "." for its root."""
    clean = "/" + path.strip("/")
    parent, _, name = clean.rpartition("/")
    return parent or "/", name or "."


def _not_found(container: str, path: str) -> NotFound:
    return NotFound(
        f'no such file or directory "{path}" in container "{container}"; '
        f"list it with carte exec {container} ls"
    )


# --- out of the container -------------------------------------------------------------------


def write_archive(root_fd: int, container: str, path: str, out: IO[bytes]) -> None:
    """A tar of `path` (a file, directory or symlink, not followed) into `out`, its top-level
    entry named after the path's last component. `NotFound` naming the path if it is absent."""
    parent, name = _split(path)
    try:
        parent_fd = open_in_root(root_fd, parent)
    except OSError as error:
        raise _not_found(container, path) from error
    try:
        try:
            os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise _not_found(container, path) from None
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            arcname = name if name != "." else "."
            _add(tar, parent_fd, name, arcname)
    finally:
        os.close(parent_fd)


def _add(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str) -> None:
    try:
        status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # removed while the copy ran
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(status.st_mode)
    info.uid, info.gid = status.st_uid, status.st_gid
    info.mtime = int(status.st_mtime)
    kind = status.st_mode
    if stat.S_ISDIR(kind):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        child_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            for child in sorted(os.listdir(child_fd)):
                _add(tar, child_fd, child, f"{arcname}/{child}")
        finally:
            os.close(child_fd)
    elif stat.S_ISLNK(kind):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(name, dir_fd=dir_fd)
        tar.addfile(info)
    elif stat.S_ISREG(kind):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as contents:
            info.size = os.fstat(contents.fileno()).st_size
            tar.addfile(info, contents)
    elif stat.S_ISFIFO(kind):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(kind) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(status.st_rdev), os.minor(status.st_rdev)
        tar.addfile(info)
    # sockets have no tar form; left out as tar itself does


# --- into the container ---------------------------------------------------------------------


def extract_archive(root_fd: int, container: str, path: str, archive: IO[bytes]) -> None:
    """Unpack a tar into the container at `path`, as `docker cp` does: into `path` when it is
    an existing directory, else as `path` itself (the archive's top-level entry renamed to the
    last component), whose parent must exist.

    Raises `NotFound` for a missing parent, `InvalidArgument` for a hostile or unsupported
    member (absolute, `..`, device). Members already unpacked before such an error stay.
    """
    parent, name = _split(path)
    try:
        target_fd = open_in_root(root_fd, path)
        into_directory = stat.S_ISDIR(os.stat(fd_path(target_fd)).st_mode)
        os.close(target_fd)
    except FileNotFoundError:
        into_directory = False
    except OSError as error:
        raise _not_found(container, path) from error
    if path.endswith("/") and not into_directory:
        raise _not_found(container, path)
    destination, rename = (path, None) if into_directory else (parent, name)
    try:
        os.close(open_in_root(root_fd, destination))
    except OSError:
        raise _not_found(container, destination) from None
    with tarfile.open(fileobj=archive, mode="r|") as tar:
        for member in tar:
            relative = _member_path(member.name, rename)
            if member.islnk():
                member.linkname = _member_path(member.linkname, rename)
            if relative:
                _extract_member(tar, member, root_fd, destination, relative)


def _member_path(name: str, rename: str | None) -> str:
    parts = [part for part in name.split("/") if part and part != "."]
    if name.startswith("/") or ".." in parts:
        raise InvalidArgument(
            f'archive member "{name}" is absolute or climbs with ".."; use relative names'
        )
    if rename is not None and parts:
        parts[0] = rename
    return "/".join(parts)


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int, destination: str, relative: str
) -> None:
    parent, _, name = f"{destination.rstrip('/')}/{relative}".rpartition("/")
    try:
        parent_fd = open_in_root(root_fd, parent or "/", create="dir")
    except OSError as error:
        raise InvalidArgument(
            f'cannot create "{parent}" in the container: {error.strerror or error}'
        ) from None
    try:
        _create(tar, member, parent_fd, name, root_fd, destination)
    except OSError as error:
        raise InvalidArgument(
            f'cannot write "{parent}/{name}" in the container: {error.strerror or error}'
        ) from None
    finally:
        os.close(parent_fd)


def _create(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    parent_fd: int,
    name: str,
    root_fd: int,
    destination: str,
) -> None:
    mode = member.mode & 0o7777
    if member.isdir():
        try:
            os.mkdir(name, mode, dir_fd=parent_fd)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                raise OSError(errno.ENOTDIR, "exists and is not a directory") from None
        return
    _remove_non_directory(parent_fd, name)
    if member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent_fd)
        with os.fdopen(fd, "wb") as target:
            while chunk := source.read(_CHUNK):
                target.write(chunk)
            os.fchmod(target.fileno(), mode)
    elif member.issym():
        os.symlink(member.linkname, name, dir_fd=parent_fd)
    elif member.islnk():
        link_parent, link_name = _split(f"{destination}/{member.linkname}")
        source_fd = open_in_root(root_fd, link_parent)
        try:
            os.link(
                link_name, name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False
            )
        finally:
            os.close(source_fd)
    elif member.isfifo():
        os.mkfifo(name, mode, dir_fd=parent_fd)
    else:
        raise InvalidArgument(
            f'archive member "{member.name}" is a device or special file; only files, '
            "directories, links and fifos can be copied into a container"
        )


def _remove_non_directory(parent_fd: int, name: str) -> None:
    """Make room for a new entry: an existing file or symlink (never followed) is replaced."""
    try:
        os.unlink(name, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise OSError(errno.EISDIR, "a directory is in the way") from None


__all__ = ["container_root", "extract_archive", "write_archive"]
