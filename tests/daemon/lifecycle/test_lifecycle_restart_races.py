"""A restart policy racing the user: a daemon whose backoff is 0.01 s restarts a crashing
container almost without pause, so a `stop` or `rm -f` mostly lands while the restart
handler's start holds the container. The stop must win every time, and every run of the
container must be reported exited exactly once (one ContainerExited per ContainerStarted)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle_lab import NO_NET
from support.containers import inspect, ok, wait_for
from support.daemon import Daemon, DaemonFactory
from support.module_daemon import stop_and_clean

# Near-continuous restarts: the start of the next run follows the exit of the last at once.
CONFIG = "containers:\n  restart:\n    base: 0.01\n    cap: 0.01\n    reset: 5.0\n"
# Longer than many restart cycles (each takes well under a second), so a lost stop shows.
WATCH = 1.5


@pytest.fixture
def storm(busybox_tar: Path) -> Iterator[Daemon]:
    factory = DaemonFactory()
    try:
        daemon = factory(config=CONFIG)
        ok(daemon.client("import", str(busybox_tar), "busybox"))
        yield daemon
        for container_id in daemon.client("ps", "-aq", "--no-trunc").stdout.split():
            daemon.client("rm", "-f", container_id, timeout=30)
    finally:
        stop_and_clean(factory)


def _crash_loop(daemon: Daemon, name: str) -> str:
    container_id = ok(
        daemon.client(
            "run", "-d", *NO_NET, "--name", name, "--restart", "always", "busybox", "false"
        )
    ).strip()
    wait_for(lambda: inspect(daemon, name)["restart_count"] >= 3, what="a few restarts")
    return container_id


def _runs_and_exits(daemon: Daemon, container_id: str) -> tuple[int, int]:
    """ContainerStarted and ContainerExited facts of the (removed) container, read from the
    journal up to its ContainerRemoved."""
    counts: collections.Counter[str] = collections.Counter()
    for event in daemon.stream("/v1/events?since=0&type=container", timeout=10):
        if event.get("id") == container_id:
            counts[event["type"]] += 1
            if event["type"] == "ContainerRemoved":
                break
    return counts["ContainerStarted"], counts["ContainerExited"]


def test_stop_during_a_restart_policy_start_is_not_lost(storm: Daemon) -> None:
    for attempt in range(3):
        name = f"storm{attempt}"
        container_id = _crash_loop(storm, name)
        ok(storm.client("stop", "-t", "1", name))
        deadline = time.monotonic() + WATCH
        while time.monotonic() < deadline:
            state = inspect(storm, name)["state"]
            assert state["status"] == "exited", f"attempt {attempt}: {name} came back: {state}"
        ok(storm.client("rm", name))
        started, exited = _runs_and_exits(storm, container_id)
        assert started == exited, f"{started} runs, {exited} ContainerExited facts"


def test_rm_f_during_a_restart_storm_reports_each_exit_once(storm: Daemon) -> None:
    container_id = _crash_loop(storm, "gone")
    ok(storm.client("rm", "-f", "gone"))
    assert storm.client("inspect", "gone").returncode != 0
    started, exited = _runs_and_exits(storm, container_id)
    assert started == exited, f"{started} runs, {exited} ContainerExited facts"
