"""Seccomp for the container process: the OCI model, profile loading and installing via libseccomp.

`LinuxSeccomp` is the OCI runtime-spec `linux.seccomp` object (camelCase in JSON, snake_case
here). `load_profile` reads either that form or Docker's profile JSON; `install` compiles a
profile with libseccomp and loads it into the calling process.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "LinuxSeccomp",
    "LinuxSeccompArg",
    "LinuxSyscall",
]


class LinuxSeccompArg(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"
):
    """One argument comparison: syscall argument `index` compared with `value` by `op`
    (SCMP_CMP_EQ, ...); `value_two` is the mask for SCMP_CMP_MASKED_EQ."""

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
