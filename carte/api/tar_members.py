"""Refusing tar members that would land outside an extraction directory.

Python added extraction filters (PEP 706) in 3.11.4; Debian 12 ships 3.11.2. `checked_member`
gives the same protection on every 3.11: use it before `TarFile.extract` when
``tarfile.data_filter`` is missing. Standard library only (the client imports it).
"""

from __future__ import annotations

import copy
import os
import stat
import tarfile


class UnsafeMember(Exception):
    """A member that would write outside the destination; the message names it."""


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def checked_member(
    member: tarfile.TarInfo, dest: str, *, allow_devices: bool = True
) -> tarfile.TarInfo:
    """`member` with setuid/setgid/sticky and group/other write bits cleared, as tarfile's
    "tar" filter does; raises UnsafeMember for an absolute name, a name or link that resolves
    outside `dest` (also through symlinks already extracted), or a device when not allowed."""
    root = os.path.realpath(dest)
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeMember(f'tar member "{name}" has an absolute path')
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(root, target):
        raise UnsafeMember(f'tar member "{name}" would be written outside {dest}')
    if member.ischr() or member.isblk() or member.isfifo():
        if not allow_devices:
            raise UnsafeMember(f'tar member "{name}" is a device or fifo; refused')
    if member.issym():
        if os.path.isabs(member.linkname):
            if not allow_devices:  # the strict ("data") form refuses absolute links
                raise UnsafeMember(f'symlink "{name}" points to an absolute path')
        else:
            pointed = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname))
            if not _inside(root, pointed):
                raise UnsafeMember(f'symlink "{name}" points outside {dest}')
    if member.islnk():
        linked = os.path.realpath(os.path.join(root, member.linkname))
        if not _inside(root, linked):
            raise UnsafeMember(f'hard link "{name}" points outside {dest}')
    mode = member.mode & ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
    safe = copy.copy(member)  # TarInfo.replace() is 3.11.4+ too
    safe.mode = mode
    return safe
