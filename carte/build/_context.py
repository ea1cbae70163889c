"""The build context on the daemon's side: a kept copy per client directory, updated from a
manifest plus the bytes of only the files that changed (what BuildKit's file sync does).

Upload format: one JSON line (`ContextUpload`: every entry's path, kind, mode, owner, size and
mtime, the Dockerfile, and which files follow), then the listed files' bytes back to back.
A file counts as unchanged when its kind, mode, owner, size and mtime (ns) equal the kept
manifest's, as BuildKit decides. Paths are validated (relative, no `..`), and nothing is ever
written through a symlink, so an upload cannot touch anything outside its directory.
"""

from __future__ import annotations

import base64
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import msgspec

MANIFEST_SUFFIX = ".manifest.json"
_CHUNK = 1 << 20


class ContextEntry(msgspec.Struct, frozen=True, array_like=True):
    path: str
    kind: str  # "f" file, "d" directory, "l" symlink
    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = 0
    link: str = ""


class ContextUpload(msgspec.Struct, frozen=True, kw_only=True):
    entries: list[ContextEntry] = []
    sent: list[int] = []  # indexes of the entries whose bytes follow, in this order
    dockerfile: str = ""
    secrets: dict[str, str] = {}  # `carte build --secret` id -> base64 value, kept in memory
    ssh: dict[str, str] = {}  # `carte build --ssh` id -> agent socket path

    def inputs(self) -> BuildInputs:
        """The secrets (decoded) and SSH agents; raises `ContextError` for a bad value."""
        try:
            secrets = {
                key: base64.b64decode(value, validate=True) for key, value in self.secrets.items()
            }
        except ValueError:
            raise ContextError("a build secret in the upload is not base64") from None
        return BuildInputs(secrets=secrets, ssh=dict(self.ssh))


class BuildInputs(msgspec.Struct, frozen=True, kw_only=True):
    """What a build gets besides its context: secrets and SSH agent sockets (never stored)."""

    secrets: dict[str, bytes] = {}
    ssh: dict[str, str] = {}


class ContextError(ValueError):
    """An unusable upload (bad path, short data) or a kept copy that changed meanwhile."""


_manifest_decoder = msgspec.json.Decoder(list[ContextEntry])
_upload_decoder = msgspec.json.Decoder(ContextUpload)


def manifest_path(target: Path) -> Path:
    return target.with_name(target.name + MANIFEST_SUFFIX)


def needed_files(target: Path, entries: list[ContextEntry]) -> list[int]:
    """Indexes of the regular files whose bytes the daemon does not hold yet."""
    try:
        kept = {e.path: e for e in _manifest_decoder.decode(manifest_path(target).read_bytes())}
    except (OSError, msgspec.DecodeError):
        kept = {}
    return [
        index
        for index, entry in enumerate(entries)
        if entry.kind == "f" and kept.get(entry.path) != entry
    ]


def decode_upload_header(line: bytes) -> ContextUpload:
    try:
        return _upload_decoder.decode(line)
    except msgspec.DecodeError as error:
        raise ContextError(f"the build context upload is malformed: {error}") from None


def apply_upload(target: Path, upload: ContextUpload, read: Callable[[int], bytes]) -> None:
    """Make `target` match `upload`, reading the sent files' bytes with `read(n)`.

    Raises `ContextError`; the kept manifest is removed first, so after a failure the next
    upload sends everything again.
    """
    manifest = manifest_path(target)
    manifest.unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    entries = upload.entries
    for entry in entries:
        _check_path(entry.path)
    wanted = {entry.path for entry in entries}
    for entry in entries:  # parents of re-included paths need not be entries themselves
        parts = entry.path.split("/")
        wanted.update("/".join(parts[:end]) for end in range(1, len(parts)))
    _prune(target, wanted)
    sent = set(upload.sent)
    for index in upload.sent:
        if not 0 <= index < len(entries) or entries[index].kind != "f":
            raise ContextError(f"the build context upload names entry {index} wrongly")
    order = {index: position for position, index in enumerate(upload.sent)}
    pending = sorted(sent, key=order.__getitem__)
    for index in pending:
        entry = entries[index]
        path = _safe_host_path(target, entry.path, create_parents=True)
        _write_file(path, entry.size, read)
    directories: list[tuple[str, ContextEntry]] = []
    for index, entry in enumerate(entries):
        path = _safe_host_path(target, entry.path, create_parents=True)
        if entry.kind == "d":
            if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
                os.unlink(path)
            os.makedirs(path, exist_ok=True)
            directories.append((path, entry))
            continue
        if entry.kind == "l":
            if not os.path.islink(path) or os.readlink(path) != entry.link:
                _remove(path)
                os.symlink(entry.link, path)
            os.lchown(path, entry.uid, entry.gid)
            continue
        if entry.kind != "f":
            raise ContextError(f'build context entry "{entry.path}" has an unknown kind')
        if index not in sent:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                raise ContextError(
                    "the daemon's copy of the build context changed during the upload; "
                    "run the build again"
                )
        os.chown(path, entry.uid, entry.gid)
        os.chmod(path, entry.mode)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
    for path, entry in reversed(directories):
        os.chown(path, entry.uid, entry.gid)
        os.chmod(path, entry.mode)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
    manifest.write_bytes(msgspec.json.encode(entries))


def _check_path(path: str) -> None:
    normal = posixpath.normpath(path)
    if (
        not path
        or path.startswith("/")
        or normal != path
        or normal == "."
        or normal.split("/")[0] == ".."
        or "\0" in path
    ):
        raise ContextError(f'build context entry "{path}" is not a plain relative path')


def _safe_host_path(target: Path, relative: str, *, create_parents: bool) -> str:
    """The host path of `relative` under `target`, refusing any symlinked parent."""
    parts = relative.split("/")
    current = str(target)
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create_parents:
                raise
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ContextError(f'build context entry "{relative}" lies below a non-directory')
    return os.path.join(current, parts[-1])


def _write_file(path: str, size: int, read: Callable[[int], bytes]) -> None:
    _remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as out:
        remaining = size
        while remaining:
            data = read(min(remaining, _CHUNK))
            if not data:
                raise ContextError("the build context upload ends early")
            out.write(data)
            remaining -= len(data)


def _remove(path: str) -> None:
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _prune(target: Path, wanted: set[str]) -> None:
    for directory, subdirs, files in os.walk(target, topdown=False):
        relative = os.path.relpath(directory, target)
        prefix = "" if relative == "." else relative + "/"
        for name in files:
            if prefix + name not in wanted:
                os.unlink(os.path.join(directory, name))
        for name in subdirs:
            path = os.path.join(directory, name)
            if prefix + name not in wanted:
                _remove(path)
