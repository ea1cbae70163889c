"""The scheduler follows the leader: two control planes and a worker (netns nodes, real
etcd). The leading control plane dies with its containers; the other one is elected, its
scheduler takes over (a new fence) and puts the lost replicas back on the remaining nodes,
and a scale asked of it is placed. A worker whose control plane dies goes on through the
other one."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cluster import SLEEPERS, ClusterLab, LabNode, WorkloadLab
from support.leftovers import remove_leftovers

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.peers]

TTL = 5


@pytest.fixture
def lab(busybox_tar: Path) -> Iterator[WorkloadLab]:
    with WorkloadLab(3, pool="10.97.0.0/16:24", node_ttl=TTL, leader_ttl=TTL) as lab:
        try:
            first, second, worker = lab.nodes
            lab.start(first, control=True)
            lab.init(first)
            lab.start(second, control=True)
            lab.init(second)
            lab.start(worker)
            lab.join(worker)
            for node in lab.nodes:
                lab.carte(node, "import", str(busybox_tar), "busybox:latest")
            yield lab
        finally:
            lab.empty_and_stop()


def ready_per_node(lab: ClusterLab, asked: LabNode) -> Counter[str]:
    listed = lab.carte(asked, "--format", "json", "service", "ps", "app_web", check=False)
    if listed.returncode != 0:
        return Counter()
    return Counter(row["node"] for row in json.loads(listed.stdout) if row["ready"])


def is_leader(lab: ClusterLab, node: LabNode) -> bool:
    answer = lab.carte(node, "--format", "json", "cluster", "status", check=False)
    return answer.returncode == 0 and bool(json.loads(answer.stdout)["is_leader"])


def test_the_next_leader_schedules(lab: WorkloadLab, tmp_path: Path) -> None:
    first, second, _ = lab.nodes
    leader = lab.wait(
        "a leader", lambda: next((n for n in lab.nodes[:2] if is_leader(lab, n)), None), 20
    )
    other = second if leader is first else first
    compose = tmp_path / "compose.yaml"
    compose.write_text(SLEEPERS.format(replicas=4, extra=""))
    lab.carte(leader, "apply", "-f", str(compose), "-n", "app")
    lab.wait("4 ready", lambda: ready_per_node(lab, leader).total() == 4, 60)
    assert leader.name in ready_per_node(lab, leader)

    killed = time.monotonic()
    leader.daemon.stop(signal.SIGKILL)
    remove_leftovers(leader.daemon)  # the machine is gone with its containers
    lab.wait("the other control plane leads", lambda: is_leader(lab, other), TTL + 10)
    lab.wait(
        "4 ready without the dead leader",
        lambda: (n := ready_per_node(lab, other)).total() == 4 and leader.name not in n,
        TTL + 30,
    )
    print(f"leader loss to 4 ready replicas again: {time.monotonic() - killed:.1f} s")
    assert "scheduler leading" in other.daemon.log()

    lab.carte(other, "service", "scale", "app_web=6")
    lab.wait("6 ready", lambda: ready_per_node(lab, other).total() == 6, 60)
    lab.carte(other, "stack", "rm", "app")
    lab.wait("none left", lambda: ready_per_node(lab, other).total() == 0, 30)


def worker_status(lab: ClusterLab, worker: LabNode) -> dict[str, Any]:
    answer = lab.carte(worker, "--format", "json", "cluster", "status")
    status: dict[str, Any] = json.loads(answer.stdout)
    return status


def test_a_worker_fails_over_to_the_other_control_plane(lab: WorkloadLab, tmp_path: Path) -> None:
    """The worker joined through the first control plane; the join's answer named both, so
    when the first dies the worker heartbeats, follows its assignments and reports through
    the second."""
    first, second, worker = lab.nodes
    known = worker_status(lab, worker)
    assert (known["server"], known["servers"]) == (first.listen, [first.listen, second.listen])

    first.daemon.stop(signal.SIGKILL)
    remove_leftovers(first.daemon)
    lab.wait(
        "the worker on the second control plane",
        lambda: worker_status(lab, worker)["server"] == second.listen,
        TTL + 5,
    )
    time.sleep(TTL + 1)  # longer than a lease: only heartbeats through the second keep it
    nodes = json.loads(lab.carte(second, "--format", "json", "node", "ls").stdout)
    assert {n["name"]: n["status"] for n in nodes}[worker.name] == "ready"

    compose = tmp_path / "compose.yaml"
    pinned = f"      placement:\n        constraints: [node.hostname=={worker.name}]\n"
    compose.write_text(SLEEPERS.format(replicas=2, extra=pinned))
    lab.carte(second, "apply", "-f", str(compose), "-n", "app")
    lab.wait("2 ready on the worker", lambda: ready_per_node(lab, second) == {worker.name: 2}, 60)
    assert "control plane changed" in worker.daemon.log()
    lab.carte(second, "stack", "rm", "app")
    lab.wait("none left", lambda: ready_per_node(lab, second).total() == 0, 30)
