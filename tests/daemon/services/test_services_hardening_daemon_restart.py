"""The autoscaler resumes after a daemon restart (issue 11 item 15): a service deployed
before the restart, idle across it, and loaded only afterwards is scaled up within a few
sync periods, without any manual `service scale` to wake it."""

from __future__ import annotations

from pathlib import Path

from services_lab import AUTOSCALED, desired, replicas
from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = (
    'network:\n  pools: ["10.95.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
    "autoscaler:\n  sync_period: 1.0\n"
)
LOADED_LATER = (
    """\
services:
  busy:
    image: busybox
    command: ["sh", "-c", "while [ ! -e /go ]; do sleep 0.2; done; while :; do :; done"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
"""
    + AUTOSCALED
)


restartable, carte = daemon_fixtures("restartable", config=CONFIG, stacks=True, networks=True)


def test_autoscaler_decides_after_a_daemon_restart(carte: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(LOADED_LATER)
    ok(carte.client("apply", "-f", str(path), "-n", "later"))
    wait_for(lambda: any(r["ready"] for r in replicas(carte, "later_busy")), 30, "a ready replica")
    carte.stop()
    carte.start()
    wait_for(
        lambda: any(r["ready"] for r in replicas(carte, "later_busy")),
        30,
        "the replica ready again",
    )
    ok(carte.client("exec", replicas(carte, "later_busy")[0]["container_id"], "touch", "/go"))
    # a baseline period and a measured one, plus slack for the stats sample and the CLI
    wait_for(lambda: desired(carte, "later", "busy") == 2, 8, "scale-up to 2 after the restart")
