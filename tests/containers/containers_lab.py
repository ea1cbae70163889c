"""Helpers for the containers tests: reading a daemon's containers from the host side."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from carte_daemon import Daemon, remove_host_network_state

CGROUP_ROOT = Path("/sys/fs/cgroup")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a client call that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def inspect(daemon: Daemon, ref: str) -> dict[str, Any]:
    details: list[dict[str, Any]] = json.loads(ok(daemon.client("inspect", ref)))
    return details[0]


def cgroup_dirs(container_id: str) -> list[Path]:
    """The container's cgroup directories that exist (v1 controllers and the unified tree)."""
    found = []
    for controller in CGROUP_ROOT.iterdir():
        candidate = controller / "carte" / container_id
        if candidate.is_dir():
            found.append(candidate)
    return found


def memory_cgroup(container_id: str) -> Path:
    return CGROUP_ROOT / "memory" / "carte" / container_id


def wait_for(condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def container_leftovers(daemon: Daemon, container_id: str) -> list[str]:
    """Everything of `container_id` still on the host: record dir, runtime state, cgroups."""
    left = [str(p) for p in cgroup_dirs(container_id)]
    for path in (
        daemon.root / "containers" / container_id,
        daemon.run_root / "runtime" / container_id,
    ):
        if path.exists():
            left.append(str(path))
    return left


def remove_leftovers(daemon: Daemon) -> None:
    """Kill and remove every container the daemon's directories still know (the daemon may be
    dead): their processes, cgroups and runtime state."""
    from carte.runtime.container import delete

    if daemon.process is None or daemon.process.poll() is not None:
        # A daemon SIGKILLed soon after its last default-network container left keeps its bridge.
        remove_host_network_state(daemon.root)
    state_dir = daemon.run_root / "runtime"
    ids: set[str] = set()
    for directory in (state_dir, daemon.root / "containers"):
        if directory.is_dir():
            ids.update(p.name for p in directory.iterdir() if len(p.name) == 64)
    for container_id in ids:
        try:
            delete(state_dir, container_id, force=True)
        except Exception:  # best-effort cleanup of a test's leftovers
            pass
        for cgroup in cgroup_dirs(container_id):
            procs = cgroup / "cgroup.procs"
            for pid in procs.read_text().split() if procs.exists() else []:
                subprocess.run(["kill", "-9", pid], check=False)
            try:
                cgroup.rmdir()
            except OSError:
                pass
