"""ctypes wrappers for the Linux syscalls CPython 3.11 does not expose.

Every wrapper raises `OSError` with the kernel's errno and a message naming the call and the
path or argument it was given, so an error that reaches a user says what failed on what.
Importing this module only loads the already-mapped C library; it is cheap on purpose (the shim
and the container's first process import it).
"""

from __future__ import annotations

import ctypes
import os

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "KEYCTL_JOIN_SESSION_KEYRING",
    "MNT_DETACH",
    "MS_BIND",
    "MS_DIRSYNC",
    "MS_LAZYTIME",
    "MS_MANDLOCK",
    "MS_NOATIME",
    "MS_NODEV",
    "MS_NODIRATIME",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_RELATIME",
    "MS_REMOUNT",
    "MS_SHARED",
    "MS_SILENT",
    "MS_SLAVE",
    "MS_STRICTATIME",
    "MS_SYNCHRONOUS",
    "MS_UNBINDABLE",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "join_session_keyring",
    "mount",
    "openat2",
    "pivot_root",
    "prctl",
    "setdomainname",
    "sethostname",
    "setns",
    "umount2",
    "unshare",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

KEYCTL_JOIN_SESSION_KEYRING = 1

_SYS_PIVOT_ROOT = 155
_SYS_OPENAT2 = 437
_SYS_KEYCTL = 250

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (CLONE_* flags). Raises `OSError`."""
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0, *, path: str = "") -> None:
    """Join the namespace open at `fd` (`path` only names it in errors). Raises `OSError`."""
    _check(_libc.setns(fd, nstype), f"setns({path or fd})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2). Raises `OSError` naming source, target and type."""
    result = _libc.mount(
        _bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data or None)
    )
    _check(
        result, f"mount {source or fstype or 'none'} on {target} (type {fstype}, flags {flags:#x})"
    )


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2). Raises `OSError` naming the target."""
    _check(_libc.umount2(_bytes(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2). Raises `OSError` naming both paths."""
    result = _libc.syscall(_SYS_PIVOT_ROOT, _bytes(new_root), _bytes(put_old))
    _check(result, f"pivot_root({new_root}, {put_old})")


def sethostname(name: str) -> None:
    """Set the UTS hostname. Raises `OSError` naming it."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def setdomainname(name: str) -> None:
    """Set the UTS NIS domain name. Raises `OSError` naming it."""
    raw = name.encode()
    _check(_libc.setdomainname(raw, len(raw)), f"setdomainname({name!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2). Raises `OSError` naming the option."""
    result: int = _libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(arg4),
        ctypes.c_ulong(arg5),
    )
    return _check(result, f"prctl({option}, {arg2})")


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` under the `resolve` restrictions.

    Returns the new fd (close-on-exec is the caller's flag to pass). Raises `OSError` naming the
    path; ENOENT when it does not exist.
    """
    how = _OpenHow(flags=flags, mode=mode, resolve=resolve)
    result = _libc.syscall(
        _SYS_OPENAT2,
        ctypes.c_int(dirfd),
        _bytes(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"open {path}: {os.strerror(errno)}", path)
    return int(result)


def join_session_keyring(name: str) -> None:
    """Give the process a new session keyring called `name` (as runc and Docker do), so the
    container does not share the host's. Raises `OSError`."""
    result = _libc.syscall(
        _SYS_KEYCTL, ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_char_p(name.encode())
    )
    _check(result, f"keyctl(join session keyring {name!r})")
