"""The compiled-program cache and the ENOSYS stub in front of libseccomp's program."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carte.runtime import seccomp
from carte.runtime.seccomp import _compile as seccomp_compile
from carte.runtime.seccomp._bpf import with_enosys_stub

RunProbe = Callable[..., dict[str, Any]]


def test_program_is_compiled_once_then_read_back(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    profile = seccomp.default_profile()
    first = seccomp_compile.cached_program(profile, cache)
    stored = list(cache.glob("*.bpf"))
    assert len(stored) == 1 and stored[0].read_bytes() == first
    assert cache.stat().st_mode & 0o777 == 0o700
    # What comes back now is the stored file, not a new compile.
    stored[0].write_bytes(first[:-8])
    assert seccomp_compile.cached_program(profile, cache) == first[:-8]


def test_a_different_profile_gets_a_different_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    seccomp_compile.cached_program(seccomp.default_profile(), cache)
    seccomp_compile.cached_program(seccomp.default_profile(["CAP_SYS_ADMIN"]), cache)
    assert len(list(cache.glob("*.bpf"))) == 2


def test_a_cache_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    cache = tmp_path / "shared"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    profile = seccomp.default_profile()
    compiled = seccomp_compile.compile_program(profile)
    planted = cache / f"{seccomp_compile._cache_key(profile)}.bpf"
    planted.write_bytes(b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # "allow everything"
    assert seccomp_compile.cached_program(profile, cache) == compiled


ALLOW = 0x7FFF0000
ENOSYS_RETURN = 0x00050000 | 38
X86_64, I386, X32 = 0xC000003E, 0x40000003, 0x4000003E


def _run_bpf(program: bytes, nr: int, arch: int) -> int:
    """Run a classic-BPF seccomp program (the instructions the stub uses) on (nr, arch)."""
    data = {0: nr, 4: arch}
    accumulator, pc = 0, 0
    while True:
        code, jump_true, jump_false, k = (
            int(field) for field in struct.unpack_from("=HBBI", program, pc * 8)
        )
        pc += 1
        if code == 0x20:
            accumulator = data[k]
        elif code == 0x06:
            return k
        elif code == 0x05:
            pc += k
        elif code in (0x15, 0x25, 0x45):
            taken = {
                0x15: accumulator == k,
                0x25: accumulator > k,
                0x45: bool(accumulator & k),
            }[code]
            pc += jump_true if taken else jump_false
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


def test_stub_sends_new_syscalls_to_enosys_and_the_rest_to_the_program() -> None:
    program = struct.pack("=HBBI", 0x06, 0, 0, ALLOW)
    patched = with_enosys_stub(program, {X86_64: 456, I386: 460, X32: 0x40000000 | 547})
    assert patched.endswith(program)
    assert _run_bpf(patched, 39, X86_64) == ALLOW
    assert _run_bpf(patched, 456, X86_64) == ALLOW
    assert _run_bpf(patched, 457, X86_64) == ENOSYS_RETURN
    assert _run_bpf(patched, 0x40000000 | 547, X86_64) == ALLOW  # an x32 call
    assert _run_bpf(patched, 0x40000000 | 600, X86_64) == ENOSYS_RETURN
    assert _run_bpf(patched, 460, I386) == ALLOW
    assert _run_bpf(patched, 461, I386) == ENOSYS_RETURN
    assert _run_bpf(patched, 9999, 0xC00000B7) == ALLOW  # an architecture the stub skips


def test_stub_for_a_profile_without_x32() -> None:
    program = struct.pack("=HBBI", 0x06, 0, 0, ALLOW)
    patched = with_enosys_stub(program, {X86_64: 456})
    assert _run_bpf(patched, 0x40000000 | 600, X86_64) == ALLOW
    assert _run_bpf(patched, 457, X86_64) == ENOSYS_RETURN


def test_filter_flags_are_passed_to_the_kernel(tmp_path: Path, run_probe: RunProbe) -> None:
    path = tmp_path / "flags.json"
    path.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
            }
        )
    )
    results = run_probe(seccomp=str(path), probes=["status", "mkdir"])
    assert results == {"status": {"Seccomp": "2", "NoNewPrivs": "1"}, "mkdir": "EPERM"}
