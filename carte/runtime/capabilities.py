"""Linux capabilities for the container process: the OCI model, Docker's flags and applying them.

The model (`LinuxCapabilities`) is the OCI runtime-spec `process.capabilities` object. Applying it
happens in the forked container child, before exec, in this order (the one runc uses):

    prepare_for_setuid()          # PR_SET_KEEPCAPS: keep permitted caps across setuid
    ... setgroups / setgid / setuid ...
    apply_after_setuid(caps)      # bounding drop, capset, ambient raise

For a container that stays root, `apply(caps)` does both steps with no uid switch in between.
Every function here raises `InvalidArgument` for an unknown capability name (before changing
anything) and `OSError` if the kernel refuses a change; the process is then half-configured and
the caller must not exec the user's program.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from carte.api.errors import InvalidArgument

__all__ = [
    "CAPABILITY_NUMBERS",
    "DEFAULT_CAPABILITIES",
    "CurrentCapabilities",
    "LinuxCapabilities",
    "all_capabilities",
    "apply",
    "apply_after_setuid",
    "capabilities_from",
    "current_capabilities",
    "default_capabilities",
    "normalize_capability",
    "prepare_for_setuid",
    "resolve_cap_changes",
]


class LinuxCapabilities(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """OCI `process.capabilities`: each set is a list of names such as "CAP_CHOWN"."""

    bounding: list[str] = []
    effective: list[str] = []
    permitted: list[str] = []
    inheritable: list[str] = []
    ambient: list[str] = []


# capabilities(7) and <linux/capability.h>; the number is the bit in the kernel's masks.
CAPABILITY_NUMBERS: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
_NAMES_BY_NUMBER = {number: name for name, number in CAPABILITY_NUMBERS.items()}

# Podman's default set: Docker's 14 without CAP_MKNOD, CAP_NET_RAW and CAP_AUDIT_WRITE.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_SETFCAP",
)

_ALL = "ALL"


def normalize_capability(name: str) -> str:
    """Return the canonical "CAP_X" spelling of `name` ("chown", "cap_chown", "CAP_CHOWN").

    Raises `InvalidArgument` naming `name` if it is not a capability this table knows.
    """
    upper = name.strip().upper()
    canonical = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if canonical not in CAPABILITY_NUMBERS:
        raise InvalidArgument(
            f'unknown capability "{name}"; use a name from capabilities(7) such as '
            "NET_ADMIN or CAP_SYS_TIME, or ALL"
        )
    return canonical


def all_capabilities() -> tuple[str, ...]:
    """Every capability this process could grant a container, in bit order: those the running
    kernel knows and this process's bounding set still holds (as Podman computes "ALL", so
    `--cap-add ALL` works where Carte itself runs with fewer capabilities)."""
    last = _last_capability()
    try:
        bounding = set(current_capabilities().bounding)
    except OSError:
        bounding = set(CAPABILITY_NUMBERS)
    return tuple(
        name for name, number in CAPABILITY_NUMBERS.items() if number <= last and name in bounding
    )


def capabilities_from(names: Iterable[str]) -> LinuxCapabilities:
    """The sets Docker gives a root container holding `names`: bounding, effective and permitted
    are `names`; inheritable and ambient are empty. Raises `InvalidArgument` for a bad name."""
    ordered = _in_bit_order(normalize_capability(name) for name in names)
    return LinuxCapabilities(bounding=ordered, effective=ordered, permitted=ordered)


def default_capabilities() -> LinuxCapabilities:
    """The default container capabilities (`DEFAULT_CAPABILITIES`) as Docker lays them out."""
    return capabilities_from(DEFAULT_CAPABILITIES)


def resolve_cap_changes(
    add: Iterable[str],
    drop: Iterable[str],
    base: Iterable[str] = DEFAULT_CAPABILITIES,
) -> tuple[str, ...]:
    """Apply Docker's `--cap-add` / `--cap-drop` to `base` and return the names in bit order.

    Names are case-insensitive, with or without "CAP_"; "ALL" means every capability. As in
    Docker: adding ALL gives every capability except those dropped; dropping ALL leaves only
    those added; otherwise drops are removed from `base` and then adds are added, so a name in
    both lists is kept. Raises `InvalidArgument` naming the first unknown name.
    """
    adds = _normalize_with_all(add)
    drops = _normalize_with_all(drop)
    if _ALL in adds:
        chosen = [name for name in all_capabilities() if name not in drops]
    elif _ALL in drops:
        chosen = list(adds)
    else:
        chosen = [normalize_capability(name) for name in base]
        chosen = [name for name in chosen if name not in drops] + list(adds)
    return tuple(_in_bit_order(chosen))


def _normalize_with_all(names: Iterable[str]) -> set[str]:
    return {_ALL if name.strip().upper() == _ALL else normalize_capability(name) for name in names}


def _in_bit_order(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=CAPABILITY_NUMBERS.__getitem__)


# ---------------------------------------------------------------------------------------------
# Applying the sets to the calling process (the forked container child).

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc: ctypes.CDLL | None = None


def _c_library() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    libc = _c_library()
    result: int = libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(arg4),
        ctypes.c_ulong(arg5),
    )
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}, {arg2}): {os.strerror(code)}")
    return result


def _last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except OSError:
        return max(CAPABILITY_NUMBERS.values())


def _mask(names: Sequence[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[normalize_capability(name)]
    return mask


def _validate(caps: LinuxCapabilities) -> None:
    for names in (caps.bounding, caps.effective, caps.permitted, caps.inheritable, caps.ambient):
        for name in names:
            normalize_capability(name)


def prepare_for_setuid() -> None:
    """Keep the permitted set across the coming setuid to a non-root uid (PR_SET_KEEPCAPS).

    Call in the container child before setuid, then `apply_after_setuid`. The kernel clears
    the flag again at execve. Raises `OSError` if prctl fails.
    """
    _prctl(_PR_SET_KEEPCAPS, 1)


def apply_after_setuid(caps: LinuxCapabilities) -> None:
    """Make the calling process hold exactly `caps`, in runc's order.

    Raises the effective set to the permitted one (setuid cleared it, and dropping from the
    bounding set needs CAP_SETPCAP), drops every capability not in `bounding` from the bounding
    set, sets effective, permitted and inheritable with capset(2), then clears the ambient set and
    raises those of `ambient` that are also permitted and inheritable (the kernel allows no
    others; runc only warns about them, Carte skips them). A name the running kernel does not
    know is skipped, as runc does. Raises `InvalidArgument` for a bad name before
    changing anything, `OSError` if the kernel refuses (the process then holds a partly applied
    set and must not exec).
    """
    _validate(caps)
    last = _last_capability()
    known = {name for name, number in CAPABILITY_NUMBERS.items() if number <= last}

    def on_kernel(names: list[str]) -> list[str]:
        return [n for n in (normalize_capability(name) for name in names) if n in known]

    _, permitted, inheritable = _capget()
    beyond_reach = _mask(on_kernel(caps.permitted)) & ~permitted
    if beyond_reach:
        missing = ", ".join(_names_in_mask(beyond_reach))
        raise OSError(
            errno.EPERM,
            f"capabilities {missing} cannot be granted: the runtime does not hold them itself; "
            "drop them (--cap-drop) or run Carte with them",
        )
    _capset(effective=permitted, permitted=permitted, inheritable=inheritable)
    keep_bounding = _mask(on_kernel(caps.bounding))
    for number in range(last + 1):
        if not keep_bounding & (1 << number) and _prctl(_PR_CAPBSET_READ, number) == 1:
            _prctl(_PR_CAPBSET_DROP, number)
    _capset(
        effective=_mask(on_kernel(caps.effective)),
        permitted=_mask(on_kernel(caps.permitted)),
        inheritable=_mask(on_kernel(caps.inheritable)),
    )
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    raisable = set(on_kernel(caps.permitted)) & set(on_kernel(caps.inheritable))
    for name in on_kernel(caps.ambient):
        if name in raisable:
            _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, CAPABILITY_NUMBERS[name])


def apply(caps: LinuxCapabilities) -> None:
    """Apply `caps` to a process that keeps its uid; see `apply_after_setuid` for failures."""
    apply_after_setuid(caps)


def _capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of the calling thread."""
    header = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    if _c_library().capget(ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"capget: {os.strerror(code)}")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def _capset(*, effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    for word in range(2):
        shift = 32 * word
        data[word].effective = (effective >> shift) & 0xFFFFFFFF
        data[word].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[word].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _c_library().capset(ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"capset: {os.strerror(code)}")


class CurrentCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    """The capability sets of a process as /proc/<pid>/status reports them, as names."""

    effective: tuple[str, ...]
    permitted: tuple[str, ...]
    inheritable: tuple[str, ...]
    bounding: tuple[str, ...]
    ambient: tuple[str, ...]


def current_capabilities(pid: int | str = "self") -> CurrentCapabilities:
    """Read the capability sets of `pid` (default: this process) from /proc/<pid>/status.

    Raises `OSError` if the process is gone; bits with no known name are shown as "CAP_<bit>".
    """
    fields: dict[str, tuple[str, ...]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
            fields[key] = _names_in_mask(int(value.strip(), 16))
    return CurrentCapabilities(
        effective=fields["CapEff"],
        permitted=fields["CapPrm"],
        inheritable=fields["CapInh"],
        bounding=fields["CapBnd"],
        ambient=fields["CapAmb"],
    )


def _names_in_mask(mask: int) -> tuple[str, ...]:
    return tuple(
        _NAMES_BY_NUMBER.get(bit, f"CAP_{bit}")
        for bit in range(mask.bit_length())
        if mask >> bit & 1
    )
