"""The OCI seccomp model and profile files: `LinuxSeccomp`, `validate`, `load_profile`.

`LinuxSeccomp` is the OCI runtime-spec `linux.seccomp` object (camelCase in JSON, snake_case
here). `validate` checks one; `load_profile` reads a file in that form or in Docker's profile
format.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Container, Iterable
from pathlib import Path

import msgspec

from carte.api.errors import InvalidArgument
from carte.runtime.capabilities import DEFAULT_CAPABILITIES, normalize_capability
from carte.runtime.seccomp._bpf import SECCOMP_FLAGS

__all__ = [
    "ACTIONS",
    "ACTIONS_WITH_ERRNO",
    "ARCHITECTURES",
    "FILTER_FLAGS",
    "OPERATORS",
    "PROGRAM_CACHE",
    "UNCONFINED",
    "LinuxSeccomp",
    "LinuxSeccompArg",
    "LinuxSyscall",
    "load_profile",
    "native_architectures",
    "validate",
]


class LinuxSeccompArg(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"
):
    """One argument comparison: syscall argument `index` compared with `value` by `op`
    (SCMP_CMP_EQ, ...); for SCMP_CMP_MASKED_EQ, `value` is the mask and `value_two` the result."""

    index: int
    value: int
    value_two: int = 0
    op: str


class LinuxSyscall(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A rule: `action` (SCMP_ACT_ALLOW, ...) for the syscalls `names` when all `args` match."""

    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[LinuxSeccompArg] = []


class LinuxSeccomp(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """OCI `linux.seccomp`: the default action and the rules that override it."""

    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = []
    flags: list[str] = []
    listener_path: str = ""
    listener_metadata: str = ""
    syscalls: list[LinuxSyscall] = []


UNCONFINED = "unconfined"
# Compiled filters, content-addressed; root-only. See `install`.
PROGRAM_CACHE = Path("/run/carte/seccomp")

# libseccomp's action values (seccomp.h); ERRNO and TRACE carry a 16-bit return value.
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
ACTIONS_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# OCI architecture name -> libseccomp's name for seccomp_arch_resolve_name.
ARCHITECTURES: dict[str, str] = {
    f"SCMP_ARCH_{name.upper()}": name
    for name in (
        "x86",
        "x86_64",
        "x32",
        "arm",
        "aarch64",
        "mips",
        "mips64",
        "mips64n32",
        "mipsel",
        "mipsel64",
        "mipsel64n32",
        "ppc",
        "ppc64",
        "ppc64le",
        "s390",
        "s390x",
        "parisc",
        "parisc64",
        "riscv64",
    )
}

# OCI `flags` this runtime passes on to seccomp(2).
FILTER_FLAGS = tuple(SECCOMP_FLAGS)
_MAX_ARGUMENTS = 6


# ---------------------------------------------------------------------------------------------
# Validation


def validate(profile: LinuxSeccomp, source: str = "seccomp profile") -> None:
    """Check every name and number in `profile` before anything is installed.

    Raises `InvalidArgument` with one line naming `source`, the field path and the fix.
    """
    _check_action(source, "defaultAction", profile.default_action, profile.default_errno_ret)
    _check_known(
        source,
        "architectures",
        profile.architectures,
        ARCHITECTURES,
        "unknown architecture",
        "use a name such as SCMP_ARCH_X86_64, SCMP_ARCH_X86 or SCMP_ARCH_AARCH64",
    )
    _check_known(
        source,
        "flags",
        profile.flags,
        FILTER_FLAGS,
        "unsupported flag",
        f"use one of {', '.join(FILTER_FLAGS)}",
    )
    if profile.listener_path:
        raise _bad(
            source,
            "listenerPath",
            "seccomp user notification is not supported by Carte",
            "remove listenerPath and the SCMP_ACT_NOTIFY rules",
        )
    for position, rule in enumerate(profile.syscalls):
        where = f"syscalls[{position}]"
        if not rule.names or not all(rule.names):
            raise _bad(source, f"{where}.names", "empty syscall name list or name", "name them")
        _check_action(source, f"{where}.action", rule.action, rule.errno_ret)
        for number, arg in enumerate(rule.args):
            field = f"{where}.args[{number}]"
            if not 0 <= arg.index < _MAX_ARGUMENTS:
                raise _bad(source, f"{field}.index", f"{arg.index} is out of range", "use 0 to 5")
            if arg.op not in OPERATORS:
                raise _bad(
                    source,
                    f"{field}.op",
                    f'unknown operator "{arg.op}"',
                    f"use one of {', '.join(OPERATORS)}",
                )
            for name, value in (("value", arg.value), ("valueTwo", arg.value_two)):
                if not 0 <= value < 1 << 64:
                    raise _bad(source, f"{field}.{name}", f"{value} is not a uint64", "fix it")


def _check_known(
    source: str,
    field: str,
    values: Iterable[str],
    known: Container[str],
    problem: str,
    fix: str,
) -> None:
    """Each of `values` is one of `known`; the first that is not is named as `problem "value"`."""
    for position, value in enumerate(values):
        if value not in known:
            raise _bad(source, f"{field}[{position}]", f'{problem} "{value}"', fix)


def _check_action(source: str, field: str, action: str, errno_ret: int | None) -> None:
    errno_field = field.replace("defaultAction", "defaultErrnoRet").replace(".action", ".errnoRet")
    if action not in ACTIONS:
        raise _bad(source, field, f'unknown action "{action}"', f"use one of {', '.join(ACTIONS)}")
    if action == "SCMP_ACT_NOTIFY":
        raise _bad(source, field, "SCMP_ACT_NOTIFY is not supported by Carte", "use SCMP_ACT_ERRNO")
    if errno_ret is not None and action not in ACTIONS_WITH_ERRNO:
        raise _bad(
            source, errno_field, f"only valid with {' or '.join(ACTIONS_WITH_ERRNO)}", "remove it"
        )
    if errno_ret is not None and not 0 <= errno_ret <= 0xFFFF:
        raise _bad(source, errno_field, f"{errno_ret} is out of range", "use an errno such as 1")


def _bad(source: str, field: str, problem: str, fix: str) -> InvalidArgument:
    return InvalidArgument(f"{source}: {field}: {problem}; {fix}")


# ---------------------------------------------------------------------------------------------
# Loading profiles: the OCI form or Docker's format (includes/excludes, archMap, `name`).


class _ProfileFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    caps: list[str] = []
    arches: list[str] = []
    min_kernel: str | None = None


class _ProfileArg(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    index: int
    value: int
    value_two: int = 0
    op: str


class _ProfileSyscall(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    name: str = ""
    names: list[str] = []
    action: str
    errno_ret: int | None = None
    errno: str = ""  # Podman writes the errno's name next to errnoRet
    args: list[_ProfileArg] | None = None
    comment: str = ""
    includes: _ProfileFilter | None = None
    excludes: _ProfileFilter | None = None


class _ArchMapEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    architecture: str
    sub_architectures: list[str] | None = None


class _ProfileDocument(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    default_action: str
    default_errno_ret: int | None = None
    default_errno: str = ""  # Podman writes the errno's name next to defaultErrnoRet
    architectures: list[str] | None = None
    arch_map: list[_ArchMapEntry] | None = None
    flags: list[str] | None = None
    listener_path: str = ""
    listener_metadata: str = ""
    syscalls: list[_ProfileSyscall] | None = None
    comment: str = ""


_profile_decoder = msgspec.json.Decoder(_ProfileDocument)

# os.uname().machine -> (Docker's arch name used in includes/excludes, OCI architecture)
_NATIVE: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
}
# The architectures a native one also runs (Docker's archMap for the ones Carte targets).
_SUB_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_ARM",),
    "SCMP_ARCH_S390X": ("SCMP_ARCH_S390",),
}


def native_architectures() -> list[str]:
    """The OCI architectures a default profile lists on this machine (x86_64: X86_64, X86, X32)."""
    _, native = _native()
    return [native, *_SUB_ARCHITECTURES.get(native, ())]


def _native() -> tuple[str, str]:
    machine = os.uname().machine
    return _NATIVE.get(machine, (machine, f"SCMP_ARCH_{machine.upper()}"))


def _kernel_at_least(version: str, field: str, source: str) -> bool:
    wanted = re.fullmatch(r"(\d+)\.(\d+)", version.strip())
    if wanted is None:
        raise _bad(source, field, f'"{version}" is not a kernel version', 'write it like "4.8"')
    running = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if running is None:
        return True
    return (int(running[1]), int(running[2])) >= (int(wanted[1]), int(wanted[2]))


def load_profile(
    source: str | os.PathLike[str] | bytes,
    *,
    capabilities: Iterable[str] = DEFAULT_CAPABILITIES,
) -> LinuxSeccomp | None:
    """Read a seccomp profile and return it in OCI form, or None for "unconfined".

    `source` is "unconfined", a file path, or the JSON bytes. Both the OCI `linux.seccomp` form
    and Docker's profile format are accepted: Docker's `includes`/`excludes` are resolved against
    `capabilities` (the container's bounding set), this machine's architecture and the running
    kernel, and `archMap` picks the entry for this machine. Raises `InvalidArgument` with one line
    naming the file and the bad field; `OSError` is turned into the same if the file is unreadable.
    """
    if isinstance(source, str) and source == UNCONFINED:
        return None
    if isinstance(source, bytes):
        name, data = "seccomp profile", source
    else:
        name = f'seccomp profile "{os.fspath(source)}"'
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise InvalidArgument(
                f"{name}: cannot read it ({error.strerror}); give the path of a JSON profile"
            ) from None
    try:
        document = _profile_decoder.decode(data)
    except msgspec.ValidationError as error:
        raise InvalidArgument(f"{name}: {_describe(error)}; fix that field") from None
    except msgspec.DecodeError as error:
        raise InvalidArgument(f"{name}: not valid JSON ({error}); fix the syntax") from None
    held = {normalize_capability(cap) for cap in capabilities}
    profile = _resolve(document, held, name)
    validate(profile, name)
    return profile


def _describe(error: msgspec.ValidationError) -> str:
    message = str(error)
    problem, _, path = message.partition(" - at `")
    if not path:
        return message
    field = path.rstrip("`").removeprefix("$.").removeprefix("$")
    return f"{field or 'top level'}: {problem}"


def _resolve(document: _ProfileDocument, held: set[str], name: str) -> LinuxSeccomp:
    docker_arch, native = _native()
    architectures = list(document.architectures or [])
    for mapping in document.arch_map or []:
        if mapping.architecture == native:
            architectures = [native, *(mapping.sub_architectures or [])]
    rules: list[LinuxSyscall] = []
    for position, entry in enumerate(document.syscalls or []):
        where = f"syscalls[{position}]"
        if not _applies(entry, held, docker_arch, name, where):
            continue
        names = list(entry.names) or ([entry.name] if entry.name else [])
        if not names:
            raise InvalidArgument(f"{name}: {where}.names: no syscall names; list at least one")
        args = [
            LinuxSeccompArg(index=arg.index, value=arg.value, value_two=arg.value_two, op=arg.op)
            for arg in entry.args or []
        ]
        errno_ret = _errno_number(entry.errno_ret, entry.errno, name, f"{where}.errno")
        rules.append(LinuxSyscall(names=names, action=entry.action, errno_ret=errno_ret, args=args))
    return LinuxSeccomp(
        default_action=document.default_action,
        default_errno_ret=_errno_number(
            document.default_errno_ret, document.default_errno, name, "defaultErrno"
        ),
        architectures=architectures,
        flags=list(document.flags or []),
        listener_path=document.listener_path,
        listener_metadata=document.listener_metadata,
        syscalls=rules,
    )


def _errno_number(number: int | None, errno_name: str, source: str, field: str) -> int | None:
    if number is not None or not errno_name:
        return number
    value = getattr(errno, errno_name.upper(), None)
    if not isinstance(value, int):
        raise _bad(source, field, f'unknown errno "{errno_name}"', "use a name such as EPERM")
    return value


def _applies(entry: _ProfileSyscall, held: set[str], arch: str, source: str, where: str) -> bool:
    excludes, includes = entry.excludes, entry.includes
    if excludes is not None:
        if arch in excludes.arches:
            return False
        if any(normalize_capability(cap) in held for cap in excludes.caps):
            return False
        if excludes.min_kernel and _kernel_at_least(
            excludes.min_kernel, f"{where}.excludes.minKernel", source
        ):
            return False
    if includes is not None:
        if includes.arches and arch not in includes.arches:
            return False
        if not all(normalize_capability(cap) in held for cap in includes.caps):
            return False
        if includes.min_kernel and not _kernel_at_least(
            includes.min_kernel, f"{where}.includes.minKernel", source
        ):
            return False
    return True
