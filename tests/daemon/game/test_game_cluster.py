"""The game server across the 3-node lab (issue 15's multi-node run): a reduced game stack
(2 web replicas on node2 and node3, 2 redis shards on node1, the control plane) is deployed
from node1, load runs from the LAN through the port the web tier publishes on node1 (which
runs no web replica: the routing mesh balances it), and node3 dies under load: its LAN link
goes down, its daemon and its containers are SIGKILLed. The web service must come back with
2 ready replicas on the other nodes; requests may fail only until then (the count is
reported), and every write answered 200 must read back intact.

Each node imports the cached debootstrap base and builds the image it runs (the base holds
every package, so no build step needs the network).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import REPO
from support.cluster import LabNode, WorkloadLab
from support.leftovers import cgroup_dirs

sys.path.insert(0, str(REPO / "config" / "examples" / "game"))

from check import check
from load import Load, Result, summary

GAME = REPO / "config" / "examples" / "game"

pytestmark = pytest.mark.slow

PORT = 18732
RATE = 60.0  # requests/s in all
GRACE = 3.0  # after the replacement is ready, no request may fail any more
STACK = f"""\
services:
  web:
    image: game-web:1
    ports: ["{PORT}:8000"]
    environment: {{SHARDS: "db1,db2"}}
    depends_on: [db1, db2]
    stop_grace_period: 5s
    deploy:
      replicas: 2
      placement: {{constraints: [node.labels.web==yes]}}
    x-carte:
      readiness:
        httpGet: {{path: /health, port: 8000}}
        initialDelaySeconds: 2
        periodSeconds: 0.5
        failureThreshold: 10
  db1:
    image: game-db:1
    volumes: ["db1-data:/data"]
    deploy: {{placement: {{constraints: [node.hostname==node1]}}}}
  db2:
    image: game-db:1
    volumes: ["db2-data:/data"]
    deploy: {{placement: {{constraints: [node.hostname==node1]}}}}
volumes:
  db1-data: {{}}
  db2-data: {{}}
"""


def carte(lab: WorkloadLab, node: LabNode, *args: str, timeout: float = 300) -> str:
    """The client in ``node``'s namespace, for what may take longer than `lab.carte` allows
    (an import, a build); its output, asserting success."""
    env = dict(os.environ, CARTE_CERT_PATH=str(lab.certs))
    argv = [*lab.command(node), "-H", f"unix://{node.daemon.socket}", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def ready_on(lab: WorkloadLab, service: str) -> list[str]:
    """The nodes of the service's ready replicas (one entry per replica)."""
    result = lab.carte(lab.nodes[0], "--format", "json", "service", "ps", service)
    return sorted(row["node"] for row in json.loads(result.stdout) if row["ready"])


def kill_node(lab: WorkloadLab, node: LabNode) -> None:
    """Power loss, as near as one machine gets: the node leaves the LAN, its daemon and every
    process of its containers are SIGKILLed at once."""
    subprocess.run(["ip", "-n", node.namespace, "link", "set", "eth0", "down"], check=True)
    daemon = node.daemon
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    for record in (daemon.root / "containers").iterdir():
        for cgroup in cgroup_dirs(record.name):
            procs = cgroup / "cgroup.procs"
            for pid in procs.read_text().split() if procs.exists() else []:
                subprocess.run(["kill", "-9", pid], check=False, capture_output=True)


def failed(results: list[Result], since: float, until: float = float("inf")) -> list[Result]:
    return [r for r in list(results) if since <= r.started < until and not r.ok]


def test_game_survives_a_node_killed_under_load(tmp_path: Path) -> None:
    base_tar = subprocess.run(
        [str(GAME / "make-base.sh"), "--tar-only"],
        capture_output=True, text=True, timeout=900, check=True,
    ).stdout.strip()  # fmt: skip
    measured: dict[str, Any] = {}
    with WorkloadLab(3, pool="10.79.0.0/16:24", node_ttl=5, leader_ttl=5) as lab:
        try:
            lab.form()
            node1, node2, node3 = lab.nodes
            for worker in (node2, node3):
                lab.carte(node1, "node", "update", "--label-add", "web=yes", worker.name)
            # node1 holds the web image too: apply checks a stack's images on the control plane.
            images = {"node1": ("db", "web"), "node2": ("web",), "node3": ("web",)}

            def prepare(node: LabNode) -> None:
                started = time.monotonic()
                carte(lab, node, "import", base_tar, "game-base:bookworm")
                for tag in images[node.name]:
                    carte(lab, node, "build", "-q", "-t", f"game-{tag}:1", str(GAME / tag))
                measured[f"{node.name}: import, build"] = round(time.monotonic() - started, 1)

            with ThreadPoolExecutor(3) as pool:  # the nodes side by side, as separate hosts
                list(pool.map(prepare, lab.nodes))

            compose = tmp_path / "compose.yaml"
            compose.write_text(STACK)
            started = time.monotonic()
            carte(lab, node1, "apply", "-f", str(compose), "-n", "game", timeout=120)
            spread = ["node2", "node3"]
            lab.wait("web on node2 and node3", lambda: ready_on(lab, "game_web") == spread, 180)
            for db in ("game_db1", "game_db2"):
                lab.wait(f"{db} ready on node1", lambda db=db: ready_on(lab, db) == ["node1"], 60)  # type: ignore[misc]
            measured["deploy to ready"] = round(time.monotonic() - started, 1)

            ledger = tmp_path / "ledger.jsonl"
            load = Load(PORT, ledger, host=node1.address, workers=4, rate=RATE).start()
            try:
                t0 = time.monotonic()
                time.sleep(6)
                baseline = (t0, time.monotonic())

                killed = time.monotonic()
                kill_node(lab, node3)
                lab.wait(
                    "2 ready web replicas, none on node3",
                    lambda: ready_on(lab, "game_web") == ["node2", "node2"],
                    120,
                )
                back = time.monotonic()
                time.sleep(GRACE + 6)
                ended = time.monotonic()
            finally:
                load.stop()

            # A request in flight when node3 died belongs to the kill, not to the baseline.
            in_flight = [r for r in failed(load.results, *baseline) if r.ended > killed]
            baseline_failed = [r for r in failed(load.results, *baseline) if r.ended <= killed]
            measured["baseline"] = summary(load.results, *baseline)
            measured["failed in flight at the kill"] = len(in_flight)
            measured["node3 killed: until web is back"] = summary(load.results, killed, back)
            measured["node3 killed: after"] = summary(load.results, back, ended)
            measured["service back after (s)"] = round(back - killed, 1)
            during = failed(load.results, killed, back + GRACE)
            if during:
                measured["last failure after the kill (s)"] = round(
                    max(r.started for r in during) - killed, 1
                )
            checked, lost = check(ledger, PORT, host=node1.address)
            measured["acknowledged writes"] = checked
            print(json.dumps(measured, indent=1))

            assert not baseline_failed, measured["baseline"]
            late = failed(load.results, back + GRACE)
            assert not late, f"{len(late)} requests failed after the service was back: {late[0]}"
            assert checked > 300, measured
            assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[0]}"
        finally:
            lab.empty_and_stop()
