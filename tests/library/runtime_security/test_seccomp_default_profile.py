"""The default seccomp profile, installed for real in a separate process."""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import pytest

from carte.runtime import seccomp
from carte.runtime.capabilities import DEFAULT_CAPABILITIES, resolve_cap_changes

# Calls the task and Docker's documentation say a default container must not make.
MUST_BE_DENIED = (
    "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "open_by_handle_at", "name_to_handle_at",
    "userfaultfd", "acct", "pivot_root", "syslog", "settimeofday", "clock_settime", "stime",
    "iopl", "ioperm", "lookup_dcookie", "quotactl", "vm86", "vm86old", "nfsservctl", "_sysctl",
    "kcmp", "process_vm_readv", "process_vm_writev", "io_uring_setup", "clone3",
)  # fmt: skip

RunProbe = Callable[..., dict[str, Any]]


def _unconditionally_allowed(profile: seccomp.LinuxSeccomp) -> set[str]:
    return {
        name
        for rule in profile.syscalls
        if rule.action == "SCMP_ACT_ALLOW" and not rule.args
        for name in rule.names
    }


def test_default_profile_denies_dangerous_calls_by_default() -> None:
    profile = seccomp.default_profile()
    allowed = _unconditionally_allowed(profile)
    assert profile.default_action == "SCMP_ACT_ERRNO"
    assert profile.default_errno_ret == 1
    assert sorted(set(MUST_BE_DENIED) & allowed) == []
    if platform.machine() == "x86_64":
        assert profile.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_capabilities_unlock_their_syscalls() -> None:
    with_admin = _unconditionally_allowed(
        seccomp.default_profile(resolve_cap_changes(["SYS_ADMIN", "sys_ptrace"], []))
    )
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3"} <= with_admin
    assert {"ptrace", "process_vm_readv", "kcmp"} <= with_admin
    assert "reboot" not in with_admin
    assert "chroot" in _unconditionally_allowed(seccomp.default_profile(DEFAULT_CAPABILITIES))
    without_chroot = seccomp.default_profile(resolve_cap_changes([], ["sys_chroot"]))
    assert "chroot" not in _unconditionally_allowed(without_chroot)


def test_default_profile_confines_a_real_process(run_probe: RunProbe) -> None:
    results = run_probe(
        seccomp="default",
        probes=[
            "status", "mount", "unshare_mount_ns", "keyctl", "clone_new_uts", "clone3",
            "personality_query", "personality_no_randomize", "vsock", "listmount",
            "file_io", "mkdir", "fork", "exec_busybox", "sockets",
        ],
    )  # fmt: skip
    assert results["status"] == {"Seccomp": "2", "NoNewPrivs": "1"}
    assert results["mount"] == "EPERM"
    assert results["unshare_mount_ns"] == "EPERM"
    assert results["keyctl"] == "EPERM"
    assert results["clone_new_uts"] == "EPERM"
    assert results["clone3"] == "ENOSYS"  # so libc falls back to clone
    assert results["personality_query"] == "ok"
    assert results["personality_no_randomize"] == "EPERM"
    assert results["vsock"] == "EPERM"
    assert results["listmount"] == "ENOSYS"  # too new for the profile: libc would fall back
    for ordinary in ("file_io", "mkdir", "fork", "exec_busybox", "sockets"):
        assert results[ordinary] == "ok", ordinary


def test_without_a_profile_the_same_calls_work(run_probe: RunProbe) -> None:
    """The control: the probes above fail because of the filter, not because of the machine."""
    probes = ["mount", "unshare_mount_ns", "keyctl", "userfaultfd", "clone3", "vsock", "listmount"]
    results = run_probe(seccomp=None, probes=["status", *probes])
    assert results["status"]["Seccomp"] == "0"
    assert results["mount"] == results["unshare_mount_ns"] == results["keyctl"] == "ok"
    assert results["userfaultfd"] == "ok"
    assert results["clone3"] != "ENOSYS"
    assert results["vsock"] != "EPERM"
    assert results["listmount"] != "ENOSYS"


@pytest.mark.parametrize("unconfined", ["unconfined"])
def test_unconfined_means_no_filter(unconfined: str) -> None:
    assert seccomp.load_profile(unconfined) is None
    seccomp.install(None)
