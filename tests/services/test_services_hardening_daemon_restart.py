"""The autoscaler resumes after a daemon restart (issue 11 item 15): a service deployed
before the restart, idle across it, and loaded only afterwards is scaled up within a few
sync periods, without any manual `service scale` to wake it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

CONFIG = (
    'network:\n  pools: ["10.95.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
    "autoscaler:\n  sync_period: 1.0\n"
)
LOADED_LATER = """\
services:
  busy:
    image: busybox
    command: ["sh", "-c", "while [ ! -e /go ]; do sleep 0.2; done; while :; do :; done"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
    deploy:
      replicas: 1
      resources:
        limits:
          cpus: "0.1"
    x-carte:
      autoscale:
        min: 1
        max: 2
        target_cpu_percent: 50
"""


@pytest.fixture(scope="module")
def restartable(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    with ModuleDaemon(busybox_tar, config=CONFIG, stacks=True, networks=True) as module:
        yield module


@pytest.fixture
def carte(restartable: ModuleDaemon) -> Iterator[Daemon]:
    with restartable.test() as daemon:
        yield daemon


def rows(carte: Daemon) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        ok(carte.client("--format", "json", "service", "ps", "later_busy"))
    )
    return found


def desired(carte: Daemon) -> int:
    listed = json.loads(ok(carte.client("--format", "json", "service", "ls", "later")))
    return int(next(r["desired"] for r in listed if r["name"] == "busy"))


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def test_autoscaler_decides_after_a_daemon_restart(carte: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(LOADED_LATER)
    ok(carte.client("apply", "-f", str(path), "-n", "later"))
    wait_for(lambda: any(r["ready"] for r in rows(carte)), 30, "a ready replica")
    carte.stop()
    carte.start()
    wait_for(lambda: any(r["ready"] for r in rows(carte)), 30, "the replica ready again")
    ok(carte.client("exec", rows(carte)[0]["container_id"], "touch", "/go"))
    # a baseline period and a measured one, plus slack for the stats sample and the CLI
    wait_for(lambda: desired(carte) == 2, 8, "scale-up to 2 after the restart")
