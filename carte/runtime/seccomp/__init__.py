"""Seccomp for the container process: the OCI model, profile files, the default, installing.

`LinuxSeccomp` is the OCI runtime-spec `linux.seccomp` object; `validate` checks one and
`load_profile` reads a file in that form or in Docker's profile format (`_profile`).
`default_profile` builds Carte's default allow-list (`_default`); `install` compiles a profile
with libseccomp (`_compile`) and loads it (`_bpf`) into the calling process. A runtime that
pivots into the container root first compiles with `_compile.cached_program` while the host's
libseccomp is reachable, then loads the bytes with `_bpf.load_program` just before exec.

The default profile and the compiler are imported on first use: the shim and init import this
package and must start fast. Module graph (no cycle): `_bpf` <- `_profile` <- `_default`,
`_compile` <- this package.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from carte.runtime.capabilities import DEFAULT_CAPABILITIES
from carte.runtime.seccomp._bpf import SECCOMP_FLAGS, load_program
from carte.runtime.seccomp._profile import *  # noqa: F403  (the model, its checks, the files)
from carte.runtime.seccomp._profile import (
    PROGRAM_CACHE,
    LinuxSeccomp,
    __all__,
    load_profile,
    validate,
)

__all__ = [
    *__all__,  # _profile's names
    "SECCOMP_FLAGS",
    "cached_program",
    "default_profile",
    "import_compiler",
    "install",
    "load_program",
    "profile_for_option",
]


def profile_for_option(
    option: str | None, capabilities: Iterable[str] = DEFAULT_CAPABILITIES
) -> LinuxSeccomp | None:
    """The profile for Docker's `--security-opt seccomp=OPTION` on a container whose bounding set
    is `capabilities`: no option gives the default profile, "unconfined" gives None (no filter),
    anything else is a profile file's path. Raises `InvalidArgument` as `load_profile` does."""
    if not option:
        return default_profile(capabilities)
    return load_profile(option, capabilities=capabilities)


def default_profile(capabilities: Iterable[str] = DEFAULT_CAPABILITIES) -> LinuxSeccomp:
    """Carte's default profile for a container whose bounding set is `capabilities`.

    Equivalent to Docker's default (and a little stricter); see `_default`.
    Raises `InvalidArgument` for an unknown capability name.
    """
    from carte.runtime.seccomp._default import build_default_profile

    return build_default_profile(capabilities)


# ---------------------------------------------------------------------------------------------
# Installing


def install(profile: LinuxSeccomp | None, *, cache_dir: Path | None = PROGRAM_CACHE) -> None:
    """Load `profile` into the calling process as a seccomp filter; None does nothing.

    The BPF program is compiled with libseccomp (see `_compile`), or read from
    `cache_dir` where an earlier install left it (keyed by the profile, libseccomp and kernel,
    so a container start skips the compile); None disables the cache, and a cache that cannot
    be used is ignored. The filter does not set no_new_privs itself: without it the caller needs
    CAP_SYS_ADMIN, so set PR_SET_NO_NEW_PRIVS first or install before dropping capabilities.
    Raises `InvalidArgument` for a bad profile, `Unavailable` without libseccomp and `OSError` if
    the kernel refuses the filter; nothing is loaded in those cases.
    """
    if profile is None:
        return
    validate(profile)
    from carte.runtime.seccomp import _compile
    from carte.runtime.seccomp._bpf import load_program

    program = _compile.cached_program(profile, cache_dir)
    load_program(program, sum(SECCOMP_FLAGS[flag] for flag in set(profile.flags)))


def import_compiler() -> None:
    """Import the compiler now (hashlib, ctypes), for a warm process that forks: the shim
    factory, whose children then share these pages instead of each loading their own."""
    from carte.runtime.seccomp import _compile

    del _compile


def cached_program(profile: LinuxSeccomp, cache_dir: Path | None = PROGRAM_CACHE) -> bytes:
    """The BPF program for `profile`, compiled with libseccomp or read from `cache_dir`.

    Raises `Unavailable` without libseccomp; see `install` for the cache's key."""
    from carte.runtime.seccomp import _compile

    return _compile.cached_program(profile, cache_dir)
