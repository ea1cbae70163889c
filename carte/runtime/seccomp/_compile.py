"""Compile a seccomp profile to a BPF program with libseccomp (ctypes), and cache the result.

libseccomp resolves syscall names per architecture, adds the architecture checks and builds the
program; Carte exports it rather than letting libseccomp load it, puts the ENOSYS stub in front
(`_bpf`) and loads it with seccomp(2). Compiling Docker's allow-list takes tens of
milliseconds, so programs are kept in a content-addressed cache and a container start only
reads one back.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import stat
from pathlib import Path

import msgspec

from carte.api.errors import Unavailable
from carte.runtime.seccomp._bpf import with_enosys_stub
from carte.runtime.seccomp._profile import (
    ACTIONS,
    ACTIONS_WITH_ERRNO,
    ARCHITECTURES,
    OPERATORS,
    LinuxSeccomp,
    LinuxSeccompArg,
)

__all__ = ["cached_program", "compile_program"]

_ATTR_CTL_NNP = 3  # enum scmp_filter_attr
_NR_SCMP_ERROR = -1
_EEXIST = 17
# With these defaults an unknown syscall already runs; the ENOSYS stub would change that.
_PERMISSIVE_DEFAULTS = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
_CACHE_FORMAT = b"carte-seccomp-program-1"


class _ArgCompare(ctypes.Structure):
    """struct scmp_arg_cmp"""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


class _Version(ctypes.Structure):
    """struct scmp_version"""

    _fields_ = (("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint))


_libseccomp: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _libseccomp
    if _libseccomp is None:
        library = _open_library()
        signatures: dict[str, tuple[object, tuple[object, ...]]] = {
            "seccomp_init": (ctypes.c_void_p, (ctypes.c_uint32,)),
            "seccomp_release": (None, (ctypes.c_void_p,)),
            "seccomp_arch_native": (ctypes.c_uint32, ()),
            "seccomp_arch_resolve_name": (ctypes.c_uint32, (ctypes.c_char_p,)),
            "seccomp_arch_add": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_uint32)),
            "seccomp_attr_set": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)),
            "seccomp_syscall_resolve_name": (ctypes.c_int, (ctypes.c_char_p,)),
            "seccomp_syscall_resolve_name_arch": (
                ctypes.c_int,
                (ctypes.c_uint32, ctypes.c_char_p),
            ),
            "seccomp_rule_add_array": (
                ctypes.c_int,
                (
                    ctypes.c_void_p,
                    ctypes.c_uint32,
                    ctypes.c_int,
                    ctypes.c_uint,
                    ctypes.POINTER(_ArgCompare),
                ),
            ),
            "seccomp_export_bpf": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_int)),
            "seccomp_version": (ctypes.POINTER(_Version), ()),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(library, name)
            function.restype = restype
            function.argtypes = argtypes
        _libseccomp = library
    return _libseccomp


def _open_library() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        pass
    from ctypes.util import find_library  # slower (runs ldconfig); only as a fallback

    path = find_library("seccomp")
    try:
        if path is None:
            raise OSError
        return ctypes.CDLL(path, use_errno=True)
    except OSError:
        raise Unavailable(
            "seccomp: libseccomp is not installed; install libseccomp2 "
            "(apt-get install libseccomp2) or run the container with seccomp=unconfined"
        ) from None


def cached_program(profile: LinuxSeccomp, cache_dir: Path | None) -> bytes:
    """The program for `profile`: read from `cache_dir` if an earlier compile stored it there,
    else compiled and stored. The cache is trusted only if `cache_dir` belongs to this user and
    nobody else may write to it; any cache problem just means compiling again.
    Raises like `compile_program`."""
    if cache_dir is None:
        return compile_program(profile)
    path = cache_dir / f"{_cache_key(profile)}.bpf"
    if _trusted_directory(cache_dir):
        try:
            return path.read_bytes()
        except OSError:
            pass
    program = compile_program(profile)
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _trusted_directory(cache_dir):
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(program)
            partial.replace(path)
    except OSError:
        pass
    return program


def _cache_key(profile: LinuxSeccomp) -> str:
    version = _library().seccomp_version().contents
    digest = hashlib.sha256(_CACHE_FORMAT)
    digest.update(f"{version.major}.{version.minor}.{version.micro}\0".encode())
    digest.update(f"{os.uname().machine}\0{os.uname().release}\0".encode())
    digest.update(msgspec.json.encode(profile))
    return digest.hexdigest()


def _trusted_directory(directory: Path) -> bool:
    try:
        info = directory.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def compile_program(profile: LinuxSeccomp) -> bytes:
    """Compile a validated `profile` to BPF: libseccomp's program, behind the ENOSYS stub unless
    the default action lets unknown calls run. Syscall names this libseccomp does not know are
    skipped, as runc does. Raises `Unavailable` without libseccomp, `OSError` if libseccomp
    refuses a rule (the message names the syscall)."""
    library = _library()
    default = action_value(profile.default_action, profile.default_errno_ret)
    context = library.seccomp_init(default)
    if not context:
        raise OSError(ctypes.get_errno(), "seccomp_init failed")
    try:
        # Carte sets no_new_privs itself when the spec asks; libseccomp must not force it.
        _check(library.seccomp_attr_set(context, _ATTR_CTL_NNP, 0), "seccomp_attr_set")
        arch_tokens = {library.seccomp_arch_native()}
        for arch in profile.architectures:
            token = library.seccomp_arch_resolve_name(ARCHITECTURES[arch].encode())
            if token == 0:
                continue  # this libseccomp does not know the architecture
            arch_tokens.add(token)
            result = library.seccomp_arch_add(context, token)
            if result != -_EEXIST:  # the native architecture is in the filter from the start
                _check(result, f"seccomp_arch_add({arch})")
        for rule in profile.syscalls:
            action = action_value(rule.action, rule.errno_ret)
            if action == default:
                continue  # libseccomp refuses a rule that repeats the default action
            for name in rule.names:
                number = library.seccomp_syscall_resolve_name(name.encode())
                if number == _NR_SCMP_ERROR:
                    continue
                for compares in _argument_groups(rule.args):
                    array = (_ArgCompare * max(len(compares), 1))(*compares)
                    result = library.seccomp_rule_add_array(
                        context, action, number, len(compares), array
                    )
                    _check(result, f"seccomp rule for {name}")
        program = _export(library, context)
    finally:
        library.seccomp_release(context)
    if profile.default_action in _PERMISSIVE_DEFAULTS:
        return program
    return with_enosys_stub(program, _highest_numbers(library, profile, arch_tokens))


def action_value(action: str, errno_ret: int | None) -> int:
    """libseccomp's value for an OCI action name; ERRNO and TRACE carry `errno_ret` (EPERM)."""
    value = ACTIONS[action]
    if action in ACTIONS_WITH_ERRNO:
        value |= (errno_ret if errno_ret is not None else 1) & 0xFFFF
    return value


def _export(library: ctypes.CDLL, context: int) -> bytes:
    descriptor = os.memfd_create("carte-seccomp", os.MFD_CLOEXEC)
    try:
        _check(library.seccomp_export_bpf(context, descriptor), "seccomp_export_bpf")
        os.lseek(descriptor, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(descriptor, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _highest_numbers(
    library: ctypes.CDLL, profile: LinuxSeccomp, arch_tokens: set[int]
) -> dict[int, int]:
    """Per architecture, the highest syscall number the profile names (and libseccomp knows)."""
    names = {name.encode() for rule in profile.syscalls for name in rule.names}
    highest: dict[int, int] = {}
    for token in arch_tokens:
        numbers = [library.seccomp_syscall_resolve_name_arch(token, name) for name in names]
        known = [number for number in numbers if number >= 0]
        if known:
            highest[token] = max(known)
    return highest


def _argument_groups(args: list[LinuxSeccompArg]) -> list[list[_ArgCompare]]:
    """One rule with all comparisons, or one rule per comparison when an argument index repeats
    (libseccomp cannot AND two tests of one argument; runc makes them alternatives the same way)."""
    compares = [
        _ArgCompare(arg=arg.index, op=OPERATORS[arg.op], datum_a=arg.value, datum_b=arg.value_two)
        for arg in args
    ]
    indexes = [arg.index for arg in args]
    if len(set(indexes)) == len(indexes):
        return [compares]
    return [[compare] for compare in compares]


def _check(result: int, what: str) -> None:
    if result < 0:
        raise OSError(-result, f"{what}: {os.strerror(-result)}")
