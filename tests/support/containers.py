"""Client-side helpers for daemon tests: checked client calls, `inspect`, waiting, cgroups."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.daemon import Daemon
from support.leftovers import CGROUP_ROOT

__all__ = ["inspect", "memory_cgroup", "ok", "run_detached", "wait_for", "wait_until"]


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


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` every 0.2 s until it returns something true, and return that;
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)
