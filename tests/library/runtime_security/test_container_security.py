"""Seccomp and capabilities seen from inside a real container run by `carte runtime run`."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from carte.runtime import seccomp
from carte.runtime.capabilities import (
    CAPABILITY_NUMBERS,
    LinuxCapabilities,
    capabilities_from,
    resolve_cap_changes,
)

RunContainer = Callable[..., subprocess.CompletedProcess[str]]

# Each line: a label and the exit status of one attempt inside the container.
ATTEMPTS = """
try() { label=$1; shift; "$@" >>/tmp/attempts.log 2>&1; echo "$label $?"; }
try mount mount -t tmpfs none /root
try unshare unshare -m true
try sethostname hostname other
try mknod mknod /tmp/disk b 8 0
try chown sh -c 'touch /tmp/f && chown 1234:1234 /tmp/f'
try chroot chroot / true
try write sh -c 'echo hi > /tmp/hello && cat /tmp/hello'
grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd|CapAmb):' /proc/self/status | tr -d '\\t' | tr ':' ' '
"""


def _outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def _mask(names: list[str] | tuple[str, ...]) -> str:
    return f"{sum(1 << CAPABILITY_NUMBERS[name] for name in names):016x}"


def _set_seccomp(profile: seccomp.LinuxSeccomp | None) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        if profile is None:
            config["linux"].pop("seccomp", None)
        else:
            config["linux"]["seccomp"] = msgspec.to_builtins(profile)

    return edit


def _set_capabilities(caps: LinuxCapabilities) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["process"]["capabilities"] = msgspec.to_builtins(caps)

    return edit


def test_default_container_is_confined(run_container: RunContainer) -> None:
    outcomes = _outcomes(run_container(ATTEMPTS))
    assert outcomes["Seccomp"] == "2" and outcomes["NoNewPrivs"] == "1"
    for denied in ("mount", "unshare", "sethostname", "mknod"):
        assert outcomes[denied] != "0", f"{denied} worked in a default container"
    for allowed in ("chown", "chroot", "write"):
        assert outcomes[allowed] == "0", f"{allowed} failed in a default container"
    assert int(outcomes["CapEff"], 16) & ~int(_mask(resolve_cap_changes([], [])), 16) == 0
    assert outcomes["CapAmb"] == "0" * 16


def test_cap_add_sys_admin_lets_mount_through_both_layers(run_container: RunContainer) -> None:
    """--cap-add SYS_ADMIN: the capability and the matching profile together allow mount."""
    names = resolve_cap_changes(["SYS_ADMIN"], [])
    caps = capabilities_from(names)
    profile = seccomp.default_profile(names)

    def edit(config: dict[str, Any]) -> None:
        _set_capabilities(caps)(config)
        _set_seccomp(profile)(config)

    outcomes = _outcomes(run_container(ATTEMPTS, edit))
    assert outcomes["mount"] == "0"
    assert outcomes["unshare"] == "0"
    assert outcomes["CapEff"] == _mask(names)


def test_cap_drop_chown_is_enforced(run_container: RunContainer) -> None:
    names = resolve_cap_changes([], ["CHOWN", "sys_chroot"])
    edit = _set_capabilities(capabilities_from(names))
    outcomes = _outcomes(run_container(ATTEMPTS, edit))
    assert outcomes["chown"] != "0"
    assert outcomes["write"] == "0"
    assert outcomes["CapBnd"] == _mask(names)


def test_docker_format_profile_in_a_container(run_container: RunContainer, tmp_path: Path) -> None:
    path = tmp_path / "deny-mkdir.json"
    path.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}
                ],
            }
        )
    )
    profile = seccomp.load_profile(path)
    result = run_container("mkdir /tmp/new; echo status $?", _set_seccomp(profile))
    assert "status 1" in result.stdout, result.stderr
    assert os.strerror(errno.EXDEV) in result.stdout + result.stderr


def test_unconfined_container_has_no_filter(run_container: RunContainer) -> None:
    result = run_container("grep Seccomp: /proc/self/status", _set_seccomp(None))
    assert result.stdout.split()[:2] == ["Seccomp:", "0"], result.stderr


def test_non_root_user_with_an_ambient_capability(run_container: RunContainer) -> None:
    ambient = ["CAP_NET_BIND_SERVICE"]
    caps = LinuxCapabilities(
        bounding=["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
        effective=ambient,
        permitted=ambient,
        inheritable=ambient,
        ambient=ambient,
    )

    def edit(config: dict[str, Any]) -> None:
        _set_capabilities(caps)(config)
        config["process"]["user"] = {"uid": 65534, "gid": 65534}

    script = "id -u; " + ATTEMPTS
    result = run_container(script, edit)
    assert result.stdout.splitlines()[0] == "65534", result.stderr
    outcomes = _outcomes(result)
    assert outcomes["CapEff"] == _mask(ambient)
    assert outcomes["CapAmb"] == _mask(ambient)
    assert outcomes["CapBnd"] == _mask(["CAP_CHOWN", "CAP_NET_BIND_SERVICE"])
    assert outcomes["chown"] != "0"


def test_cap_add_all_starts_with_every_grantable_capability(run_container: RunContainer) -> None:
    names = resolve_cap_changes(["ALL"], [])
    profile = seccomp.default_profile(names)

    def edit(config: dict[str, Any]) -> None:
        _set_capabilities(capabilities_from(names))(config)
        _set_seccomp(profile)(config)

    outcomes = _outcomes(run_container(ATTEMPTS, edit))
    assert outcomes["CapEff"] == _mask(names)
    assert outcomes["mount"] == outcomes["sethostname"] == "0"


def test_seccomp_without_no_new_privileges(run_container: RunContainer) -> None:
    """Podman and Docker leave noNewPrivileges unset by default; the filter must still load."""

    def edit(config: dict[str, Any]) -> None:
        config["process"]["noNewPrivileges"] = False

    result = run_container("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status", edit)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NoNewPrivs:", "0", "Seccomp:", "2"]
