"""Bring an uploaded build context tar into a directory, touching only what changed.

The daemon keeps the last context of each client directory (a "session") and syncs each new
upload into it: a file whose bytes, mode and owner are unchanged is left in place (creating
files is the slow part on most filesystems), changed ones are rewritten, and paths no longer
in the upload are removed. Entries go through the standard library's `data` tar filter (no
absolute paths, no `..`, no links out of the context, no device nodes); owners are kept.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path

DOCKERFILE_ENTRY = ".carte-build-dockerfile"
_CHUNK = 1 << 20


class ContextError(ValueError):
    """The upload is not a usable tar, or an entry is unsafe; the message names it."""


def sync_context(archive: Path, target: Path) -> str | None:
    """Make `target` hold exactly the archive's entries; return the Dockerfile entry's text
    (None when the archive has none). Raises `ContextError`; on failure `target` may be
    partly synced, and the caller discards it.
    """
    target.mkdir(parents=True, exist_ok=True)
    kept: set[str] = set()
    dockerfile: str | None = None
    destination = str(target)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.name == DOCKERFILE_ENTRY:
                    data = tar.extractfile(member)
                    dockerfile = data.read().decode("utf-8", "replace") if data else ""
                    continue
                try:
                    safe = _keep_owner(member, destination)
                except tarfile.FilterError as error:
                    raise ContextError(f"build context entry {member.name}: {error}") from None
                name = posixpath.normpath(safe.name)
                kept.add(name)
                for parent in _parents(name):
                    kept.add(parent)
                if not _unchanged(tar, safe, target / name):
                    _remove(target / name, keep_dir=safe.isdir())
                    tar.extract(safe, destination, set_attrs=True, filter="fully_trusted")
                elif safe.isreg() or safe.isdir():
                    os.utime(target / name, (safe.mtime, safe.mtime), follow_symlinks=False)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ContextError(f"the build context is not a readable tar archive: {error}") from None
    _prune(target, kept)
    return dockerfile


def _keep_owner(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    safe = tarfile.data_filter(member, destination)
    return safe.replace(uid=member.uid, gid=member.gid, mode=member.mode, deep=False)


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:end]) for end in range(1, len(parts))]


def _unchanged(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if (st.st_uid, st.st_gid) != (member.uid, member.gid):
        return False
    if member.isdir():
        return stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == member.mode
    if member.issym():
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == member.linkname
    if not member.isreg() or not stat.S_ISREG(st.st_mode):
        return False
    if st.st_size != member.size or stat.S_IMODE(st.st_mode) != member.mode:
        return False
    incoming = tar.extractfile(member)
    if incoming is None:
        return False
    with open(path, "rb") as existing:
        while True:
            new = incoming.read(_CHUNK)
            if new != existing.read(len(new) or 1):
                return False
            if not new:
                return True


def _remove(path: Path, *, keep_dir: bool) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir() and not keep_dir:
        shutil.rmtree(path)


def _prune(target: Path, kept: set[str]) -> None:
    for directory, subdirs, files in os.walk(target, topdown=False):
        relative = os.path.relpath(directory, target)
        prefix = "" if relative == "." else relative + "/"
        for name in files:
            if prefix + name not in kept:
                os.unlink(os.path.join(directory, name))
        for name in subdirs:
            path = os.path.join(directory, name)
            if prefix + name not in kept:
                if os.path.islink(path):
                    os.unlink(path)
                else:
                    shutil.rmtree(path)
