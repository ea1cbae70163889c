"""Device rules on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.

cgroup v2 has no devices.allow/deny files; the kernel instead runs a program attached to the
cgroup for every open or mknod of a device node. `device_program` compiles the spec's rules into
one: the rules are tried from the last to the first and the first that matches decides, which
gives the same answers as writing them in order to v1's devices.allow/deny; no match denies.
"""

from __future__ import annotations

import ctypes
import os
import struct

from carte.api.errors import Internal, Unavailable
from carte.runtime.cgroups.resources import LinuxDeviceCgroup

_SYS_BPF = 321  # x86_64
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6

# struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32 major; u32 minor; }
_DEVICE_TYPES = {"b": 1, "c": 2}
_ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
_ALL_ACCESS = 7

# Opcodes (linux/bpf_common.h, linux/bpf.h).
_LDX_MEM_W = 0x61
_MOV32_REG = 0xBC
_AND32_IMM = 0x54
_RSH32_IMM = 0x74
_JNE_IMM = 0x55
_JEQ_IMM = 0x15
_MOV64_IMM = 0xB7
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_mask(access: str | None) -> int:
    mask = 0
    for letter in access or "rwm":
        mask |= _ACCESS_BITS.get(letter, 0)
    return mask


def _rule_block(rule: LinuxDeviceCgroup) -> list[tuple[int, int, int, int, int]]:
    """Instructions deciding one rule; a conditional jump's offset None means "next rule"."""
    block: list[tuple[int, int, int, int | None, int]] = []
    kind = _DEVICE_TYPES.get(rule.type or "a")
    if kind is not None:
        block.append((_JNE_IMM, 2, 0, None, kind))
    if rule.major is not None and rule.major >= 0:
        block.append((_JNE_IMM, 4, 0, None, rule.major))
    if rule.minor is not None and rule.minor >= 0:
        block.append((_JNE_IMM, 5, 0, None, rule.minor))
    mask = _access_mask(rule.access)
    block.append((_MOV32_REG, 6, 3, 0, 0))
    if rule.allow:
        # Allowed only if every requested access is among the rule's.
        block.append((_AND32_IMM, 6, 0, 0, _ALL_ACCESS & ~mask))
        block.append((_JNE_IMM, 6, 0, None, 0))
    else:
        # Denied as soon as any requested access is among the rule's.
        block.append((_AND32_IMM, 6, 0, 0, mask))
        block.append((_JEQ_IMM, 6, 0, None, 0))
    block.append((_MOV64_IMM, 0, 0, 0, 1 if rule.allow else 0))
    block.append((_EXIT, 0, 0, 0, 0))
    return [
        (code, dst, src, len(block) - index - 1 if off is None else off, imm)
        for index, (code, dst, src, off, imm) in enumerate(block)
    ]


def device_program(rules: list[LinuxDeviceCgroup]) -> bytes:
    """The eBPF instructions enforcing ``rules``; a request no rule matches is denied."""
    program = [
        _insn(_LDX_MEM_W, dst=2, src=1, off=0),
        _insn(_MOV32_REG, dst=3, src=2),
        _insn(_AND32_IMM, dst=2, imm=0xFFFF),  # r2: device type
        _insn(_RSH32_IMM, dst=3, imm=16),  # r3: requested access
        _insn(_LDX_MEM_W, dst=4, src=1, off=4),  # r4: major
        _insn(_LDX_MEM_W, dst=5, src=1, off=8),  # r5: minor
    ]
    for rule in reversed(rules):
        program.extend(_insn(*fields) for fields in _rule_block(rule))
    program += [_insn(_MOV64_IMM, dst=0, imm=0), _insn(_EXIT)]
    return b"".join(program)


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


class _ProgAttachAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
    ]


def _bpf(command: int, attr: ctypes.Structure) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(
        libc.syscall(_SYS_BPF, command, ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    )
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def attach_device_filter(cgroup_dir: str, rules: list[LinuxDeviceCgroup]) -> None:
    """Load the program for ``rules`` and attach it to the cgroup, replacing an earlier one.

    Raises `Unavailable` when the kernel refuses eBPF (no CAP_BPF/CAP_SYS_ADMIN, or no
    CONFIG_CGROUP_BPF) and `Internal` when the verifier rejects the program, with its log.
    """
    code = device_program(rules)
    instructions = ctypes.create_string_buffer(code, len(code))
    license_text = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(16384)
    load = _ProgLoadAttr(
        prog_type=_BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt=len(code) // 8,
        insns=ctypes.addressof(instructions),
        license=ctypes.addressof(license_text),
        log_level=1,
        log_size=len(log),
        log_buf=ctypes.addressof(log),
        prog_name=b"carte_devices",
    )
    try:
        program_fd = _bpf(_BPF_PROG_LOAD, load)
    except OSError as error:
        if error.errno in (1, 38):  # EPERM, ENOSYS
            raise Unavailable(
                f"cannot load the cgroup v2 device filter: {error.strerror}; run as root on a "
                "kernel with CONFIG_CGROUP_BPF"
            ) from None
        verifier = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise Internal(
            f"the kernel rejected the cgroup v2 device filter: {error.strerror} "
            f"({' | '.join(verifier)})"
        ) from None
    try:
        cgroup_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attach = _ProgAttachAttr(
                target_fd=cgroup_fd, attach_bpf_fd=program_fd, attach_type=_BPF_CGROUP_DEVICE
            )
            _bpf(_BPF_PROG_ATTACH, attach)
        except OSError as error:
            raise Internal(
                f"cannot attach the device filter to cgroup {cgroup_dir}: {error.strerror}"
            ) from None
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(program_fd)
