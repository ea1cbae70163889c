"""Restart policies against a real daemon with real containers (short backoff from the test
carte.yaml: 0.3 s doubling to 2.4 s): on-failure:N, always, unless-stopped, RestartCount,
"restarting", and policies applied again after the daemon was SIGKILLed and restarted."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from lifecycle_lab import NO_NET, event_lines, exec_ok
from support.containers import inspect, ok, run_detached, wait_for
from support.daemon import Daemon

# Runs until /tmp/crash appears, then removes it and fails: a crash on demand.
CRASHABLE = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; while [ ! -e /tmp/crash ]; do sleep 0.05; done; rm /tmp/crash; exit 1",
]
LONGER_THAN_BACKOFF = 3.0


def _state(daemon: Daemon, ref: str) -> dict[str, Any]:
    return dict(inspect(daemon, ref)["state"])


def _running_with_pid_other_than(daemon: Daemon, ref: str, pid: int) -> bool:
    state = _state(daemon, ref)
    return bool(state["status"] == "running" and state["pid"] not in (0, pid))


def _crash(daemon: Daemon, ref: str) -> int:
    """Make the container fail (exit 1); the pid it had."""
    pid = int(_state(daemon, ref)["pid"])
    exec_ok(daemon, ref, "touch", "/tmp/crash")
    return pid


def test_on_failure_stops_after_max_retries(carte: Daemon) -> None:
    container_id = run_detached(
        carte,
        *NO_NET,
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    )
    wait_for(
        lambda: (
            inspect(carte, "flaky")["restart_count"] == 2
            and _state(carte, "flaky")["status"] == "exited"
        ),
        what="two restarts, then exited",
    )
    time.sleep(LONGER_THAN_BACKOFF)
    details = inspect(carte, "flaky")
    assert details["restart_count"] == 2
    assert details["state"]["status"] == "exited" and details["state"]["exit_code"] == 3
    lines = event_lines(
        carte, "--since", "0", "--filter", "type=container", until="restart_count=2"
    )
    restarts = [line for line in lines if "ContainerRestarting" in line and container_id in line]
    assert len(restarts) == 2


def test_status_is_restarting_while_waiting(carte: Daemon) -> None:
    run_detached(carte, *NO_NET, "--name", "waiter", "--restart", "always", "busybox", *CRASHABLE)
    for _ in range(3):  # waits of 0.3, 0.6 and 1.2 s; the next one (2.4 s) is long enough to see
        pid = _crash(carte, "waiter")
        wait_for(
            lambda pid=pid: _running_with_pid_other_than(carte, "waiter", pid), what="restarted"
        )
    _crash(carte, "waiter")
    wait_for(
        lambda: "Restarting (1)" in ok(carte.client("ps", "--filter", "name=waiter")),
        what="ps showing Restarting (1)",
    )
    ok(carte.client("stop", "waiter"))  # ends the wait: no restart
    time.sleep(LONGER_THAN_BACKOFF)
    details = inspect(carte, "waiter")
    assert details["state"]["status"] == "exited" and details["restart_count"] == 4


def test_always_restarts_a_crash_but_not_a_stop(carte: Daemon) -> None:
    run_detached(carte, *NO_NET, "--name", "phoenix", "--restart", "always", "busybox", *CRASHABLE)
    pid = _crash(carte, "phoenix")
    wait_for(lambda: _running_with_pid_other_than(carte, "phoenix", pid), what="restarted")
    assert inspect(carte, "phoenix")["restart_count"] == 1
    ok(carte.client("stop", "phoenix"))
    time.sleep(LONGER_THAN_BACKOFF)
    state = _state(carte, "phoenix")
    assert state["status"] == "exited" and state["exit_code"] == 0


def test_no_policy_is_not_restarted(carte: Daemon) -> None:
    run_detached(carte, *NO_NET, "--name", "once", "busybox", *CRASHABLE)
    _crash(carte, "once")
    wait_for(lambda: _state(carte, "once")["status"] == "exited", what="exited")
    time.sleep(LONGER_THAN_BACKOFF)
    assert _state(carte, "once")["status"] == "exited"
    assert inspect(carte, "once")["restart_count"] == 0


def test_policies_apply_after_a_daemon_sigkill(carte: Daemon) -> None:
    """Running containers survive the daemon's SIGKILL and stay manageable; a crash after the
    new daemon adopted them is restarted; a user-stopped unless-stopped container stays
    stopped while an always one comes back (Docker's rules on daemon start); an always
    container that crashed while no daemon ran comes back."""
    run_detached(carte, *NO_NET, "--name", "keeper", "--restart", "always", "busybox", *CRASHABLE)
    downcrash_id = run_detached(
        carte, *NO_NET, "--name", "downcrash", "--restart", "always", "busybox", *CRASHABLE
    )
    for name in ("stopped-always", "stopped-unless"):
        policy = "always" if name == "stopped-always" else "unless-stopped"
        run_detached(carte, *NO_NET, "--name", name, "--restart", policy, "busybox", *CRASHABLE)
        ok(carte.client("stop", name))
    keeper_pid = int(_state(carte, "keeper")["pid"])
    downcrash_pid = int(_state(carte, "downcrash")["pid"])
    carte.stop(signal.SIGKILL)
    os.kill(downcrash_pid, signal.SIGKILL)  # it crashes while no daemon runs
    exit_file = carte.run_root / "runtime" / downcrash_id / "exit.json"
    wait_for(exit_file.exists, what="the shim's record of the crash")
    carte.start()

    assert _state(carte, "keeper")["pid"] == keeper_pid
    wait_for(lambda: _state(carte, "downcrash")["status"] == "running", what="downcrash back")
    wait_for(
        lambda: _state(carte, "stopped-always")["status"] == "running",
        what="always container back on daemon start",
    )
    time.sleep(LONGER_THAN_BACKOFF)
    assert _state(carte, "stopped-unless")["status"] == "exited"

    _crash(carte, "keeper")
    wait_for(
        lambda: _running_with_pid_other_than(carte, "keeper", keeper_pid),
        what="keeper restarted by the new daemon",
    )
    ok(carte.client("stop", "keeper"))
    assert _state(carte, "keeper")["status"] == "exited"
