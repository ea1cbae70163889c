"""Rolling updates on a slow machine (issue 11 item 14): a new replica that takes longer than
its healthcheck's own budget to turn healthy is given until the readiness deadline (counted
from its start, at least 60 s or update_config.monitor) instead of being rolled back; the
rollout reads completed only once the desired count runs and is ready; `rollout status
--timeout` returns within a second of it; replicas stopped together (a scale-down, a batch)
wait out one grace period side by side, and `stop_signal` is the signal they get."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from support.containers import ok
from support.daemon import Daemon

SLOW = """\
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo {tag} > /tag; sleep {delay}; touch /healthy; exec sleep 1000000"]
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD", "sh", "-c", "sleep 2; test -e /healthy"]
      interval: 0.5s
      retries: 8
    deploy:
      replicas: 2
      update_config:
        parallelism: 2
        monitor: 1s
"""
STUBBORN = """\
services:
  web:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' USR1; while :; do sleep 0.2; done"]
    stop_grace_period: {grace}s
{signal}    deploy:
      replicas: 2
"""


def apply(carte: Daemon, tmp_path: Path, text: str) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    ok(carte.client("apply", "-f", str(path), "-n", "roll"))


def rows(carte: Daemon) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        ok(carte.client("--format", "json", "service", "ps", "roll_web"))
    )
    return found


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def test_slow_healthy_replica_is_waited_for_not_rolled_back(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, tmp_path, SLOW.format(tag="v1", delay=0))
    wait_for(lambda: len([r for r in rows(carte) if r["ready"]]) == 2, 30, "2 ready")
    # the healthcheck's own budget is 0.5 s x 9 + 5 = 9.5 s, but each check takes 2 s (as on
    # a loaded machine): healthy after about 14 s, with 5 of the 8 allowed failures
    apply(carte, tmp_path, SLOW.format(tag="v2", delay=12))
    status = carte.client("rollout", "status", "roll_web", "--timeout", "90", timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "completed" in status.stdout, status.stdout
    done = rows(carte)
    assert len(done) == 2 and all(r["ready"] for r in done), done
    assert all(r["revision"] == 2 for r in done), done


def test_rollout_status_timeout_is_honoured(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, tmp_path, SLOW.format(tag="v1", delay=0))
    wait_for(lambda: len([r for r in rows(carte) if r["ready"]]) == 2, 30, "2 ready")
    apply(carte, tmp_path, SLOW.format(tag="v2", delay=30))
    status = carte.client("rollout", "status", "roll_web", "--timeout", "2", timeout=30)
    assert status.returncode == 1 and "2 s" in status.stderr, status.stderr
    assert carte.process is not None
    os.kill(carte.process.pid, signal.SIGSTOP)  # a daemon too busy to answer at all
    try:
        started = time.monotonic()
        status = carte.client("rollout", "status", "roll_web", "--timeout", "2", timeout=30)
        took = time.monotonic() - started
    finally:
        os.kill(carte.process.pid, signal.SIGCONT)
    assert status.returncode == 1 and "2 s" in status.stderr, status.stderr
    assert took < 2 + 1.5, f"--timeout 2 returned after {took:.1f}s"  # + client start-up


def test_stops_side_by_side_and_stop_signal(carte: Daemon, tmp_path: Path) -> None:
    grace = 6
    apply(carte, tmp_path, STUBBORN.format(grace=grace, signal=""))
    wait_for(lambda: len(rows(carte)) == 2 and all(r["ready"] for r in rows(carte)), 30, "2 up")
    started = time.monotonic()
    ok(carte.client("service", "scale", "roll_web=0"))
    wait_for(lambda: not rows(carte), 3 * grace, "both stopped")
    took = time.monotonic() - started
    assert grace - 1 <= took < 1.5 * grace, f"two stops of {grace} s grace took {took:.1f}s"
    apply(carte, tmp_path, STUBBORN.format(grace=grace, signal="    stop_signal: SIGUSR1\n"))
    ok(carte.client("service", "scale", "roll_web=2"))
    wait_for(lambda: len(rows(carte)) == 2 and all(r["ready"] for r in rows(carte)), 30, "2 up")
    started = time.monotonic()
    ok(carte.client("service", "scale", "roll_web=0"))
    wait_for(lambda: not rows(carte), 3 * grace, "both stopped")
    assert time.monotonic() - started < grace - 1, "stop_signal SIGUSR1 was not sent"
