"""Cluster-wide services over the overlay: a lab of 4 network-namespace nodes (a control
plane with a real etcd, three workers), busybox imported on the first three. A stack applied on the
control plane places a web service's replicas on the two workers only; node1, which runs
none, reaches them through the service's name and VIP, and a replica killed on node2 stops
receiving node1's connections before its replacement is ready. The port the service
publishes answers on every node's LAN address, node1's too, and node4's, which had not
even the service's network before (the routing mesh). A replica turning unhealthy leaves
node1's balancing as soon as its node sees it (not at its agent's next status report).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import LabNode, WorkloadLab

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.peers]

PORT = 18080
SERVE = "echo served-by-$(hostname) > /index.html && exec httpd -f -p 80 -h /"
STACK = f"""\
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "{SERVE}"]
    ports: ["{PORT}:80"]
    healthcheck:
      test: ["CMD", "test", "-f", "/index.html"]
      interval: 1s
      retries: 1
    deploy:
      replicas: 2
      placement:
        constraints: [node.labels.zone==b]
        max_replicas_per_node: 1
"""


@pytest.fixture(scope="module")
def lab(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkloadLab]:
    with WorkloadLab(4, pool="10.73.0.0/16:24", node_ttl=5, leader_ttl=5) as lab:
        try:
            lab.form()
            for node in lab.nodes[:3]:
                lab.carte(node, "import", str(busybox_tar), "busybox:latest")
            control = lab.nodes[0]
            for worker in ("node2", "node3"):
                lab.carte(control, "node", "update", "--label-add", "zone=b", worker)
            compose = tmp_path_factory.mktemp("stack") / "compose.yaml"
            compose.write_text(STACK)
            lab.carte(control, "apply", "-f", str(compose), "-n", "app")
            lab.wait("2 ready replicas", lambda: len(ready(lab)) == 2, 60)
            yield lab
        finally:
            lab.empty_and_stop()


def ready(lab: WorkloadLab) -> dict[str, str]:
    """Ready replicas: node -> container id."""
    result = lab.carte(lab.nodes[0], "--format", "json", "service", "ps", "app_web")
    rows = json.loads(result.stdout)
    return {row["node"]: row["container_id"] for row in rows if row["ready"]}


def fetch_many(
    lab: WorkloadLab, node: LabNode, target: str, count: int, network: str = "app_default"
) -> list[str]:
    """``count`` GETs of ``target``:80 from one container on ``network`` at ``node``; each
    answer's first word served-by-* or "failed"."""
    get = (
        f"for i in $(seq {count}); do "
        f"(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target} 80 | grep served-by || "
        "echo failed); done"
    )
    result = lab.carte(node, "run", "--rm", "--network", network, "busybox:latest",
                       "sh", "-c", get, check=False)  # fmt: skip
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def test_a_vip_whose_replicas_are_all_on_other_nodes(lab: WorkloadLab) -> None:
    node1 = lab.nodes[0]
    assert set(ready(lab)) == {"node2", "node3"}

    def both_served() -> set[str]:
        answers = fetch_many(lab, node1, "web", 10)
        served = {a for a in answers if a.startswith("served-by-")}
        return served if len(served) == 2 and "failed" not in answers else set()

    lab.wait("node1 reaches both remote replicas through web's VIP", both_served, 30)


def test_a_killed_replica_stops_getting_vip_traffic_at_once(lab: WorkloadLab) -> None:
    node1, node2, *_ = lab.nodes
    before = ready(lab)
    lab.carte(node2, "kill", before["node2"])
    killed = time.monotonic()
    time.sleep(1)
    answers = fetch_many(lab, node1, "web", 6)
    print(f"6 answers {time.monotonic() - killed:.1f} s after the kill; ready then: {ready(lab)}")
    assert answers and all(a.startswith("served-by-") for a in answers), answers
    assert f"served-by-{before['node2'][:12]}" not in answers
    lab.wait("the replacement is ready", lambda: len(ready(lab)) == 2, 60)


def test_replica_names_resolve_across_nodes(lab: WorkloadLab) -> None:
    node1 = lab.nodes[0]
    answers = fetch_many(lab, node1, "tasks.web", 4)
    assert answers and all(a.startswith("served-by-") for a in answers), answers


def get_from_lan(address: str) -> str:
    """GET / from the LAN (the host side of the lab's bridge)."""
    with socket.create_connection((address, PORT), timeout=3) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        conn.settimeout(3)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
        return answer.decode(errors="replace")


def test_a_published_port_answers_on_a_node_with_no_replica(lab: WorkloadLab) -> None:
    def answered(node: LabNode) -> bool:
        try:
            return "served-by-" in get_from_lan(node.address)
        except OSError:
            return False

    assert "node1" not in ready(lab) and "node4" not in ready(lab)
    for node in lab.nodes:
        lab.wait(f"port {PORT} on {node.name}", lambda node=node: answered(node), 20)  # type: ignore[misc]
    assert all(answered(lab.nodes[0]) for _ in range(5))


def test_an_unhealthy_replica_leaves_the_vip_at_once(lab: WorkloadLab) -> None:
    node1, node2, *_ = lab.nodes
    # The replica killed by an earlier test is replaced; its copy must be ready on node2 again.
    both = {"node2", "node3"}

    def break_node2() -> dict[str, str]:
        """Node2's ready replica made to fail its check; once, in CI, the replica the control
        plane listed as ready had exited by the time of the exec (a stale row, not reproduced
        since): the exec is tried again on the next listing."""
        replicas = ready(lab)
        if not both <= replicas.keys():
            return {}
        removed = lab.carte(node2, "exec", replicas["node2"], "rm", "/index.html", check=False)
        return replicas if removed.returncode == 0 else {}

    replicas = lab.wait("a ready replica on node2 and node3, node2's broken", break_node2, 60)
    broken = time.monotonic()

    def only_node3() -> bool:
        answers = fetch_many(lab, node1, "web", 6)
        return answers == [f"served-by-{replicas['node3'][:12]}"] * 6

    lab.wait("node2's unhealthy replica left node1's balancing", only_node3, 10)
    print(f"served by node3 only {time.monotonic() - broken:.1f} s after the check broke")
