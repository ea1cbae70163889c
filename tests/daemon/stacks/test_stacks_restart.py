"""`carte restart` of a stack replica restarts it in place (issue 15, item 5): the same
container, with the same address, ready again, and the stack does not replace it or add one
while it is down."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.containers import ok
from support.daemon import Daemon
from support.web import http_get
from test_stacks_daemon import apply, ready_count, replicas, wait_for, web, write


@pytest.mark.slow
def test_restart_of_a_replica_keeps_it_and_the_stack_waits(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, write(tmp_path, web(replicas=2)))
    wait_for(ready_count(carte, 2), 30, "2 ready replicas")
    before = {r["container_id"]: r["ip"] for r in replicas(carte)}
    victim = sorted(before)[0]

    ok(carte.client("restart", victim, timeout=60))
    wait_for(ready_count(carte, 2), 30, "2 ready replicas after the restart")
    time.sleep(6)  # longer than the stack's poll: nothing is replaced or added meanwhile

    after = {r["container_id"]: r["ip"] for r in replicas(carte)}
    assert after == before, f"replicas changed: {before} -> {after}"
    assert all(r["ready"] for r in replicas(carte))
    state = json.loads(ok(carte.client("--format", "json", "inspect", victim)))
    state = state[0] if isinstance(state, list) else state
    assert state["state"]["status"] == "running"
    assert http_get(before[victim]).startswith("v1 ")
    assert sorted(ok(carte.client("ps", "-aq", "--no-trunc")).split()) == sorted(before)


TWO_NETWORKS = """\
services:
  web:
    image: busybox
    command: ["sleep", "100000"]
    networks: [front, back]
networks:
  front: {}
  back: {}
"""


def test_a_replica_restarted_in_place_keeps_both_its_networks(
    carte: Daemon, tmp_path: Path
) -> None:
    (tmp_path / "compose.yaml").write_text(TWO_NETWORKS)
    ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "twonet"))
    joined = "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}"

    def networks_of(container: str) -> list[str]:
        return sorted(ok(carte.client("inspect", "-f", joined, container)).split())

    wait_for(lambda: len(ok(carte.client("ps", "-q")).split()) == 1, 30, "the replica")
    replica = ok(carte.client("ps", "-q")).split()[0]
    wait_for(lambda: len(networks_of(replica)) == 2, 30, "both networks")
    assert networks_of(replica) == ["twonet_back", "twonet_front"]
    ok(carte.client("restart", "-t", "1", replica, timeout=60))
    assert networks_of(replica) == ["twonet_back", "twonet_front"]
    ok(carte.client("stack", "rm", "twonet", timeout=60))
