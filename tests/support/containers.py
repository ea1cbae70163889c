"""Client-side helpers for daemon tests: checked client calls, `inspect`, waiting, cgroups."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from support.daemon import Daemon
from support.leftovers import CGROUP_ROOT

__all__ = ["inspect", "memory_cgroup", "ok", "run_detached", "wait_for"]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a client call that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def run_detached(daemon: Daemon, *args: str) -> str:
    """`carte run -d ARGS`, which must succeed; the new container's id."""
    return ok(daemon.client("run", "-d", *args)).strip()


def inspect(daemon: Daemon, ref: str) -> dict[str, Any]:
    details: list[dict[str, Any]] = json.loads(ok(daemon.client("inspect", ref)))
    return details[0]


def memory_cgroup(container_id: str) -> Path:
    return CGROUP_ROOT / "memory" / "carte" / container_id


def wait_for(condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
