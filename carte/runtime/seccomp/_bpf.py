"""ENOSYS for syscalls newer than a profile knows, by prefixing libseccomp's BPF program.

An allow-list answers every unlisted syscall with its default errno (EPERM). For a syscall the
profile's author could not know yet that is wrong: libc tries new calls (clone3, fchmodat2, ...)
and falls back to old ones only on ENOSYS. So, as runc does, a short stub runs first: for each
architecture in the filter, a syscall number above the highest one the profile names returns
ENOSYS; everything else goes on to libseccomp's program unchanged.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

__all__ = ["SECCOMP_FLAGS", "load_program", "with_enosys_stub"]

# seccomp(2) SECCOMP_SET_MODE_FILTER flags for the OCI `flags` names.
SECCOMP_FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

_INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGT_K = 0x25
_JSET_K = 0x45
_RET_K = 0x06
_JA = 0x05
_OFFSET_NR = 0  # struct seccomp_data
_OFFSET_ARCH = 4
_SECCOMP_RET_ERRNO = 0x00050000
_AUDIT_ARCH_X86_64 = 0xC000003E
_AUDIT_ARCH_X32 = 0x4000003E  # libseccomp's token; the kernel reports X86_64 with this bit:
_X32_SYSCALL_BIT = 0x40000000
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "i686": 354, "riscv64": 277, "s390x": 348}
_SECCOMP_SET_MODE_FILTER = 1


# An instruction before assembly: opcode, jump-if-true label, jump-if-false label, k. An empty
# label means "the next instruction"; a bare string in the list marks where a label points.
_Instruction = tuple[int, str, str, int]


def with_enosys_stub(program: bytes, highest: dict[int, int]) -> bytes:
    """`program` (libseccomp's exported BPF) behind a stub returning ENOSYS for any syscall number
    above `highest[arch]` on that architecture (audit arch tokens, as libseccomp uses them).

    Raises `ValueError` if the stub cannot be encoded (more architectures than BPF can jump over).
    """
    items: list[_Instruction | str] = []
    x32_top = highest.get(_AUDIT_ARCH_X32)
    blocks = [(arch, top) for arch, top in sorted(highest.items()) if arch != _AUDIT_ARCH_X32]
    for position, (arch, top) in enumerate(blocks):
        other_arch = f"block{position + 1}"
        items += [
            (_LD_W_ABS, "", "", _OFFSET_ARCH),
            (_JEQ_K, "", other_arch, arch),
            (_LD_W_ABS, "", "", _OFFSET_NR),
        ]
        if arch == _AUDIT_ARCH_X86_64:
            # x32 calls arrive as x86_64 with a high bit set in the number.
            items.append((_JSET_K, "x32" if x32_top is not None else "main", "", _X32_SYSCALL_BIT))
            items.append((_JGT_K, "enosys", "main", top))
            if x32_top is not None:
                items += ["x32", (_JGT_K, "enosys", "main", x32_top)]
        else:
            items.append((_JGT_K, "enosys", "main", top))
        items.append(other_arch)
    return _assemble(items) + program


def _assemble(items: list[_Instruction | str]) -> bytes:
    labels: dict[str, int] = {}
    code: list[_Instruction] = []
    for item in items:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)
    # An architecture no block matched falls through: jump over the ENOSYS return to main.
    code.append((_JA, "", "", 1))
    labels["enosys"] = len(code)
    code.append((_RET_K, "", "", _SECCOMP_RET_ERRNO | errno.ENOSYS))
    labels["main"] = len(code)
    out = bytearray()
    for index, (opcode, on_true, on_false, value) in enumerate(code):
        out += _INSTRUCTION.pack(
            opcode, _offset(labels, on_true, index), _offset(labels, on_false, index), value
        )
    return bytes(out)


def _offset(labels: dict[str, int], target: str, index: int) -> int:
    if not target:
        return 0
    offset = labels[target] - (index + 1)
    if not 0 <= offset <= 255:
        raise ValueError(f"seccomp stub: jump to {target} is out of BPF's range")
    return offset


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def load_program(program: bytes, flags: int) -> None:
    """Install a BPF `program` with seccomp(2) SECCOMP_SET_MODE_FILTER and `flags`.

    Needs no_new_privs or CAP_SYS_ADMIN, like any filter. Raises `OSError` if the kernel refuses.
    """
    number = _SYS_SECCOMP.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"seccomp: no syscall number known for {os.uname().machine}")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len=len(program) // _INSTRUCTION.size, filter=ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(
        ctypes.c_long(number),
        ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(flags),
        ctypes.byref(prog),
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"seccomp(SET_MODE_FILTER): {os.strerror(code)}")
