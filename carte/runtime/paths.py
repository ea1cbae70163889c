"""Resolve paths inside a container root as if chrooted there.

Every lookup goes through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) relative to an fd of
the root, so `..` and absolute symlinks in the image stay inside it: a hostile image whose /proc
or a mount destination is a symlink to a host path gets that path *inside its own root*. The
resulting fd is then used as `/proc/self/fd/N` for mount(2) and friends.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from carte.runtime.syscalls import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

__all__ = ["fd_path", "open_in_root", "opened_in_root"]

_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS


def fd_path(fd: int) -> str:
    """The magic path that names whatever `fd` refers to, for syscalls that take a path."""
    return f"/proc/self/fd/{fd}"


def open_in_root(root_fd: int, path: str, *, create: str | None = None, mode: int = 0o755) -> int:
    """Open `path` inside the root open at `root_fd` as an O_PATH fd and return it.

    With `create="dir"` missing directories are made (mode `mode`); with `create="file"` the
    last component is made as an empty file and its parents as directories. A dangling symlink
    on the way is followed inside the root and its target created there. Raises `OSError`
    (ENOENT when missing and `create` is None; ENOTDIR when a parent is a file; ELOOP).
    """
    relative = path.lstrip("/")
    if not relative:
        return os.dup(root_fd)
    try:
        return openat2(root_fd, relative, os.O_PATH | os.O_CLOEXEC, _RESOLVE)
    except FileNotFoundError:
        if create is None:
            raise
    _create_in_root(root_fd, relative, create, mode)
    return openat2(root_fd, relative, os.O_PATH | os.O_CLOEXEC, _RESOLVE)


_SYMLINK_BUDGET = 40


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def _create_in_root(root_fd: int, path: str, kind: str, mode: int) -> None:
    parts = _components(path)
    for _ in range(_SYMLINK_BUDGET):
        followed = False
        for index, name in enumerate(parts):
            prefix = "/".join(parts[: index + 1])
            try:
                os.close(openat2(root_fd, prefix, os.O_PATH | os.O_CLOEXEC, _RESOLVE))
                continue
            except FileNotFoundError:
                pass
            with opened_in_root(root_fd, "/".join(parts[:index])) as parent_fd:
                target = _dangling_link(parent_fd, name)
                if target is None:
                    last = index == len(parts) - 1
                    _make_entry(parent_fd, name, kind if last else "dir", mode)
                    continue
            base = [] if target.startswith("/") else parts[:index]
            parts = base + _components(target) + parts[index + 1 :]
            followed = True
            break
        if not followed:
            return
    raise OSError(errno.ELOOP, f"open {path}: too many levels of symbolic links", path)


def _dangling_link(parent_fd: int, name: str) -> str | None:
    real_parent = os.open(fd_path(parent_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.readlink(name, dir_fd=real_parent)
    except OSError:
        return None
    finally:
        os.close(real_parent)


def _make_entry(parent_fd: int, name: str, kind: str | None, mode: int) -> None:
    # The parent was resolved inside the root; `name` is one plain component, so no symlink can
    # redirect the creation (O_EXCL|O_NOFOLLOW refuses a dangling symlink racing in).
    real_parent = os.open(fd_path(parent_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if kind == "dir":
            try:
                os.mkdir(name, mode, dir_fd=real_parent)
            except FileExistsError:
                pass
        else:
            try:
                fd = os.open(
                    name,
                    os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644,
                    dir_fd=real_parent,
                )
                os.close(fd)
            except FileExistsError:
                pass
    finally:
        os.close(real_parent)


@contextmanager
def opened_in_root(
    root_fd: int, path: str, *, create: str | None = None, mode: int = 0o755
) -> Iterator[int]:
    """`open_in_root` as a context manager that closes the fd."""
    fd = open_in_root(root_fd, path, create=create, mode=mode)
    try:
        yield fd
    finally:
        os.close(fd)


def is_directory(fd: int) -> bool:
    """Whether the O_PATH `fd` refers to a directory."""
    return stat.S_ISDIR(os.stat(fd_path(fd)).st_mode)
