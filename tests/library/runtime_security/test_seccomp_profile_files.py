"""Seccomp profile files: Docker's format and the OCI form load, are enforced, and bad ones are
refused with one line naming the field."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from carte.api.errors import InvalidArgument
from carte.runtime import seccomp

PODMAN_PROFILE = Path("/usr/share/containers/seccomp.json")

RunProbe = Callable[..., dict[str, Any]]
ProbeProcess = Callable[..., subprocess.CompletedProcess[str]]


def _docker_profile() -> dict[str, object]:
    """Allow everything but mkdir (EACCES), with entries whose includes/excludes do not apply."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {
                "architecture": "SCMP_ARCH_X86_64",
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            },
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {
                "names": ["mkdir", "mkdirat"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EACCES,
                "comment": "chosen errno",
            },
            {
                "names": ["rmdir"],
                "action": "SCMP_ACT_ERRNO",
                "includes": {"caps": ["CAP_SYS_ADMIN"]},
            },
            {
                "name": "getcwd",
                "action": "SCMP_ACT_ERRNO",
                "includes": {"minKernel": "99.0"},
            },
            {
                "names": ["unlink", "unlinkat"],
                "action": "SCMP_ACT_ERRNO",
                "excludes": {"arches": ["amd64", "arm64"]},
            },
        ],
    }


def test_docker_format_resolves_includes_and_excludes(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(_docker_profile()))
    profile = seccomp.load_profile(path)
    assert profile is not None
    assert [rule.names for rule in profile.syscalls] == [["mkdir", "mkdirat"]]
    assert profile.syscalls[0].errno_ret == errno.EACCES
    assert profile.architectures == seccomp.native_architectures()
    with_admin = seccomp.load_profile(path, capabilities=["CAP_SYS_ADMIN"])
    assert with_admin is not None
    assert ["rmdir"] in [rule.names for rule in with_admin.syscalls]


def test_docker_format_profile_is_enforced(
    tmp_path: Path, probe_scratch: Path, run_probe: RunProbe
) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(_docker_profile()))
    (probe_scratch / "gone").mkdir()
    results = run_probe(
        seccomp=str(path), probes=["status", "mkdir", "rmdir", "file_io", "listmount"]
    )
    assert results["status"]["Seccomp"] == "2"
    assert results["mkdir"] == "EACCES"
    assert results["rmdir"] == "ok"
    assert results["file_io"] == "ok"
    assert results["listmount"] != "ENOSYS"  # an allow-by-default profile lets new calls run


def test_oci_form_round_trips_and_is_enforced(tmp_path: Path, run_probe: RunProbe) -> None:
    profile = seccomp.LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        architectures=seccomp.native_architectures(),
        syscalls=[
            seccomp.LinuxSyscall(
                names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO", errno_ret=errno.EROFS
            )
        ],
    )
    path = tmp_path / "oci.json"
    path.write_bytes(msgspec.json.encode(profile))
    assert b'"defaultAction":"SCMP_ACT_ALLOW"' in path.read_bytes()
    assert seccomp.load_profile(path) == profile
    assert run_probe(seccomp=str(path), probes=["mkdir"]) == {"mkdir": "EROFS"}


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"])
def test_killing_actions_end_the_process_with_sigsys(
    tmp_path: Path, probe_process: ProbeProcess, action: str
) -> None:
    path = tmp_path / "kill.json"
    rule = {"names": ["mkdir", "mkdirat"], "action": action}
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}))
    done = probe_process(seccomp=str(path), probes=["file_io", "mkdir"])
    assert done.returncode == -signal.SIGSYS, done.stderr
    assert done.stdout == ""


@pytest.mark.skipif(not PODMAN_PROFILE.exists(), reason="Debian's podman profile not installed")
def test_podmans_shipped_profile_loads_and_confines(run_probe: RunProbe) -> None:
    profile = seccomp.load_profile(PODMAN_PROFILE)
    assert profile is not None and profile.default_errno_ret == errno.ENOSYS
    results = run_probe(
        seccomp=str(PODMAN_PROFILE), probes=["status", "userfaultfd", "exec_busybox"]
    )
    assert results == {"status": results["status"], "userfaultfd": "EPERM", "exec_busybox": "ok"}
    assert results["status"]["Seccomp"] == "2"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b'{"defaultAction": "SCMP_ACT_ALOW"}', 'defaultAction: unknown action "SCMP_ACT_ALOW"'),
        (b'{"defaultAction": 3}', "defaultAction: Expected `str`, got `int`"),
        (b'{"syscalls": []}', "missing required field `defaultAction`"),
        (
            b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],'
            b' "action": "SCMP_ACT_ERRNO",'
            b' "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "syscalls[0].args[0].index: 9 is out of range",
        ),
        (
            b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],'
            b' "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}',
            'syscalls[0].args[0].op: unknown operator "EQ"',
        ),
        (
            b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],'
            b' "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "new"}}]}',
            'syscalls[0].includes.minKernel: "new" is not a kernel version',
        ),
        (
            b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "acton": "x"}]}',
            "syscalls[0]: Object contains unknown field `acton`",
        ),
        (b'{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["amd64"]}', "architectures[0]"),
        (b'{"defaultAction": "SCMP_ACT_NOTIFY"}', "SCMP_ACT_NOTIFY is not supported"),
        (b'{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}', "defaultErrnoRet"),
        (b'{"defaultAction": "SCMP_ACT_ALLOW",', "not valid JSON"),
    ],
)
def test_malformed_profiles_name_the_field(document: bytes, expected: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        seccomp.load_profile(document)
    message = raised.value.message
    assert expected in message
    assert "\n" not in message and message.startswith("seccomp profile")


def test_missing_profile_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r'seccomp profile ".*nope.json": cannot read it'):
        seccomp.load_profile(tmp_path / "nope.json")


def test_install_validates_before_loading() -> None:
    """A bad profile handed straight to install (as from config.json) is refused, not loaded."""
    bad = seccomp.LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=[seccomp.LinuxSyscall(names=["read"], action="SCMP_ACT_EXPLODE")],
    )
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]\.action"):
        seccomp.install(bad)


def test_security_opt_values(tmp_path: Path) -> None:
    """--security-opt seccomp=...: nothing, "unconfined" or a file, for the container's caps."""
    assert seccomp.profile_for_option(None) == seccomp.default_profile()
    with_admin = seccomp.profile_for_option("", ["CAP_SYS_ADMIN"])
    assert with_admin == seccomp.default_profile(["CAP_SYS_ADMIN"])
    assert seccomp.profile_for_option("unconfined") is None
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(_docker_profile()))
    from_file = seccomp.profile_for_option(str(path), ["CAP_SYS_ADMIN"])
    assert from_file is not None and ["rmdir"] in [rule.names for rule in from_file.syscalls]
    with pytest.raises(InvalidArgument, match="cannot read it"):
        seccomp.profile_for_option(str(tmp_path / "missing.json"))
