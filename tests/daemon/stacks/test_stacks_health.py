"""Healthchecks in stacks against a real daemon: a Compose healthcheck gates readiness when no
readiness probe is given, depends_on service_healthy waits for it, and a replica that turns
unhealthy is replaced."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon

STACK = """\
services:
  db:
    image: busybox
    stop_grace_period: 1s
    command: ["sh", "-c", "touch /ok; exec sleep 3600"]
    healthcheck:
      test: ["CMD", "test", "-e", "/ok"]
      interval: 0.3s
      timeout: 2s
      retries: 2
  app:
    image: busybox
    stop_grace_period: 1s
    command: ["sleep", "3600"]
    depends_on:
      db: {condition: service_healthy}
"""


def services(carte: Daemon) -> dict[str, dict[str, object]]:
    rows = json.loads(ok(carte.client("--format", "json", "service", "ls", "hc")))
    return {r["name"]: r for r in rows}


def replica_ids(carte: Daemon, service: str) -> list[str]:
    rows = json.loads(ok(carte.client("--format", "json", "service", "ps", f"hc_{service}")))
    return [r["container_id"] for r in rows if r["ready"]]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def test_healthcheck_gates_readiness_and_unhealthy_is_replaced(
    carte: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(STACK)
    ok(carte.client("apply", "-f", str(path), "-n", "hc"))
    wait_for(lambda: len(replica_ids(carte, "db")) == 1, 20, "db healthy, so ready")
    wait_for(lambda: len(replica_ids(carte, "app")) == 1, 20, "app started after db")
    db_inspect = json.loads(ok(carte.client("inspect", replica_ids(carte, "db")[0])))
    app_inspect = json.loads(ok(carte.client("inspect", replica_ids(carte, "app")[0])))
    db = db_inspect[0] if isinstance(db_inspect, list) else db_inspect
    app = app_inspect[0] if isinstance(app_inspect, list) else app_inspect
    assert app["created"] > db["state"]["started_at"]
    sick = replica_ids(carte, "db")[0]
    ok(carte.client("exec", sick, "rm", "/ok"))

    def replaced() -> bool:
        ids = replica_ids(carte, "db")
        return len(ids) == 1 and ids[0] != sick

    wait_for(replaced, 20, "the unhealthy replica replaced by a healthy one")
    assert sick not in ok(carte.client("ps", "-aq", "--no-trunc"))
