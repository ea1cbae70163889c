"""Rolling updates across a cluster follow deploy.update_config as on one machine: a
control plane and a worker (netns nodes, real etcd, real containers) run 3 replicas;
a start-first update with parallelism 1, a delay and a monitor window never drops below
3 running and starts one extra at a time; an update whose replicas fail rolls back to the
previous revision (failure_action rollback) or stops where it is (pause), as `carte
rollout status` reports. The control plane lists the replicas its nodes run, each with the
address its node gave it and `ps`'s wording of its state ("Up 5 seconds")."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cluster import WorkloadLab

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.peers]

TTL = 5
COMPOSE = """\
services:
  web:
    image: busybox:latest
    command: {command}
    stop_grace_period: 1s
    environment: {{VERSION: "{version}"}}
    deploy:
      replicas: 3
      update_config:
        parallelism: 1
        delay: 1s
        order: {order}
        monitor: 2s
        failure_action: {action}
"""
GOOD = '["sleep", "3600"]'
BAD = '["sh", "-c", "exit 1"]'


@pytest.fixture(scope="module")
def lab(busybox_tar: Path) -> Iterator[WorkloadLab]:
    with WorkloadLab(2, pool="10.89.0.0/16:24", node_ttl=TTL, leader_ttl=TTL).formed(
        busybox_tar
    ) as lab:
        apply(lab, "1", GOOD)
        lab.wait("3 ready", lambda: ready(lab) == {"1": 3}, 60)
        yield lab


def apply(lab: WorkloadLab, version: str, command: str, **update: str) -> None:
    settings = {"order": "stop-first", "action": "rollback", **update}
    compose = Path(lab.certs) / f"compose-{version}.yaml"
    compose.write_text(COMPOSE.format(version=version, command=command, **settings))
    lab.carte(lab.nodes[0], "apply", "-f", str(compose), "-n", "app")


def ready(lab: WorkloadLab) -> Counter[str]:
    """Ready replicas per revision, as `service ps` on the control plane shows them."""
    answer = lab.carte(lab.nodes[0], "--format", "json", "service", "ps", "app_web")
    rows: list[dict[str, Any]] = json.loads(answer.stdout)
    return Counter(row["revision"] for row in rows if row["ready"])


def running(lab: WorkloadLab) -> Counter[str]:
    """Running replica containers per revision over both nodes (each node's own `ps`)."""
    counts: Counter[str] = Counter()
    for node in lab.nodes:
        answer = lab.carte(node, "--format", "json", "ps", "--filter", "label=com.carte.stack")
        for row in map(json.loads, answer.stdout.splitlines()):  # one JSON line each
            counts[row["labels"]["com.carte.cluster.revision"]] += 1
    return counts


def follow(lab: WorkloadLab) -> tuple[subprocess.CompletedProcess[str], list[Counter[str]]]:
    """`carte rollout status app_web` until it ends, sampling `running` meanwhile."""
    command = [*lab.command(lab.nodes[0]), "-H", f"unix://{lab.nodes[0].daemon.socket}"]
    status = subprocess.Popen(
        [*command, "rollout", "status", "--timeout", "120", "app_web"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    samples = []
    while status.poll() is None:
        samples.append(running(lab))
    out, _ = status.communicate()
    return subprocess.CompletedProcess(status.args, status.returncode, out, ""), samples


def test_the_control_plane_lists_the_replicas_its_nodes_run(lab: WorkloadLab) -> None:
    answer = lab.carte(lab.nodes[0], "--format", "json", "service", "inspect", "app_web")
    shown = json.loads(answer.stdout)
    rows = (shown[0] if isinstance(shown, list) else shown)["replicas"]
    assert len(rows) == 3 and {row["node"] for row in rows} == {"node1", "node2"}, rows
    assert all(row["ready"] and row["status"].startswith("Up ") for row in rows), rows
    assert all(row["container_id"] and row["revision"] == 1 for row in rows), rows
    for row in rows:  # each with the address its node gave it, as that node's inspect says
        node = next(n for n in lab.nodes if n.name == row["node"])
        (details,) = json.loads(lab.carte(node, "inspect", row["container_id"]).stdout)
        assert row["ip"] == details["endpoints"][0]["ip_address"], (row, details["endpoints"])
    table = lab.carte(lab.nodes[0], "service", "ps", "app_web").stdout.splitlines()
    header = table[0]  # `docker service ps`'s CURRENT STATE: the status in `ps`'s words
    assert re.split(r"\s{2,}", header)[:4] == ["NAME", "NODE", "REV", "CURRENT STATE"], header
    at = header.index("CURRENT STATE")
    assert len(table) == 4 and all(line[at:].startswith("Up ") for line in table[1:]), table


def test_a_start_first_update_keeps_every_replica_and_adds_one_at_a_time(
    lab: WorkloadLab,
) -> None:
    started = time.monotonic()
    apply(lab, "2", GOOD, order="start-first")
    result, samples = follow(lab)
    took = time.monotonic() - started
    counts = [sum(sample.values()) for sample in samples]
    print(f"start-first update of 3 replicas: {took:.1f} s, running {counts}")
    assert result.returncode == 0 and "revision 2 completed, 3/3 updated" in result.stdout
    assert min(counts) >= 3 and max(counts) <= 4, samples
    assert took >= 3 * 2 + 2 * 1 - 1, f"3 batches of monitor 2 s and 2 delays of 1 s: {took}"
    assert ready(lab) == {"2": 3}
    lab.wait("the last old copy gone", lambda: running(lab) == {"2": 3}, 10)


def test_a_failing_update_rolls_back(lab: WorkloadLab) -> None:
    apply(lab, "3", BAD)
    result, samples = follow(lab)
    assert result.returncode == 1 and "revision 2 rolled_back" in result.stdout, result.stdout
    assert "update to revision 3 failed" in result.stdout
    assert min(s["2"] for s in samples) >= 2, "parallelism 1: one replica at a time"
    lab.wait("3 ready at revision 2", lambda: ready(lab) == {"2": 3}, 60)
    assert running(lab) == {"2": 3}


def test_a_failing_update_pauses(lab: WorkloadLab) -> None:
    apply(lab, "4", BAD, action="pause")
    result, _samples = follow(lab)
    assert result.returncode == 1 and "paused" in result.stdout, result.stdout
    time.sleep(3)  # paused: nothing more is replaced
    assert ready(lab)["2"] == 2 and running(lab)["2"] == 2
