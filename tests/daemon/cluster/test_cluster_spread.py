"""Scheduling across real nodes: a lab of 3 network-namespace nodes (one control plane with
a real etcd, two workers), every handler running, busybox imported on the control plane
only (the workers fetch it from there over mutual TLS). A stack's replicas are spread over
the nodes, honour constraints, share the node of the service whose network (network_mode
service:) and volumes (volumes_from) they take, get their secrets over mutual TLS (never in
a worker's store), move off a drained node without dropping below the desired ready count,
come back elsewhere when a node dies (kill -9 of its daemon and its containers), and an etcd
restart under a running cluster stops nothing.

One lab for the module; tests run in file order and each removes its stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cluster import SLEEPERS, ClusterLab, LabNode, WorkloadLab
from support.daemon import Daemon
from support.leftovers import cgroup_dirs

from carte.handlers.cluster._agent import PERIOD as AGENT_PERIOD

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.peers]

TTL = 5


@pytest.fixture(scope="module")
def lab(busybox_tar: Path) -> Iterator[WorkloadLab]:
    with WorkloadLab(3, pool="10.94.0.0/16:24", node_ttl=TTL, leader_ttl=TTL) as lab:
        try:
            lab.form()
            control = lab.nodes[0]
            # only on the control plane: the workers fetch it from there (mutual TLS)
            lab.carte(control, "import", str(busybox_tar), "busybox:latest")
            lab.wait("3 ready nodes", lambda: _statuses(lab) == ["ready"] * 3, 20)
            yield lab
        finally:
            lab.empty_and_stop()


def apply(lab: ClusterLab, tmp_path: Path, replicas: int, extra: str = "") -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(SLEEPERS.format(replicas=replicas, extra=extra))
    lab.carte(lab.nodes[0], "apply", "-f", str(compose), "-n", "app")


def placements(lab: ClusterLab) -> list[dict[str, Any]]:
    result = lab.carte(lab.nodes[0], "--format", "json", "service", "ps", "app_web")
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def running(lab: ClusterLab) -> Counter[str]:
    """Replicas running per node, as each node's own `carte ps` shows them."""
    counts: Counter[str] = Counter()
    for node in lab.nodes:
        daemon = node.daemon
        if daemon.process is None or daemon.process.poll() is not None:
            continue
        listed = daemon.client("ps", "-q", "--filter", "label=com.carte.stack=app").stdout
        counts[node.name] = len(listed.split())
    return +counts


def ready_per_node(lab: ClusterLab) -> Counter[str]:
    return Counter(row["node"] for row in placements(lab) if row["ready"])


def remove_stack(lab: ClusterLab) -> None:
    lab.carte(lab.nodes[0], "stack", "rm", "app")
    lab.wait("no replica left", lambda: not running(lab), 30)


def test_six_replicas_spread_over_three_nodes(lab: WorkloadLab, tmp_path: Path) -> None:
    started = time.monotonic()
    apply(lab, tmp_path, 6)
    lab.wait("6 ready replicas", lambda: sum(ready_per_node(lab).values()) == 6, 60)
    print(f"6 replicas ready over 3 nodes in {time.monotonic() - started:.1f} s")
    assert ready_per_node(lab) == {"node1": 2, "node2": 2, "node3": 2}
    assert running(lab) == {"node1": 2, "node2": 2, "node3": 2}
    listed = json.loads(lab.carte(lab.nodes[0], "--format", "json", "service", "ls").stdout)
    assert [(s["desired"], s["running"], s["ready"]) for s in listed] == [(6, 6, 6)]
    for worker in lab.nodes[1:]:
        assert "image fetched from the control plane" in worker.daemon.log()
    table = lab.carte(lab.nodes[0], "service", "ps", "app_web").stdout
    assert table.splitlines()[0].split()[:2] == ["NAME", "NODE"]
    assert {line.split()[1] for line in table.splitlines()[1:]} == {"node1", "node2", "node3"}
    remove_stack(lab)


def test_constraints_and_a_replica_that_fits_nowhere(lab: WorkloadLab, tmp_path: Path) -> None:
    lab.carte(lab.nodes[0], "node", "update", "--label-add", "zone=a", "node3")
    extra = "      placement:\n        constraints: [node.labels.zone==a]\n"
    extra += "        max_replicas_per_node: 2\n"
    apply(lab, tmp_path, 3, extra)
    lab.wait("2 ready on node3", lambda: ready_per_node(lab) == {"node3": 2}, 60)
    pending = [row for row in placements(lab) if not row["node"]]
    assert len(pending) == 1
    assert "2 nodes not matching node.labels.zone==a" in pending[0]["reason"]
    assert "1 node at max_replicas_per_node (2)" in pending[0]["reason"]
    assert running(lab) == {"node3": 2}
    remove_stack(lab)
    lab.carte(lab.nodes[0], "node", "update", "--label-rm", "zone", "node3")


def test_a_one_shot_replica_is_not_restarted(lab: WorkloadLab, tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        'services:\n  web:\n    image: busybox:latest\n    command: ["true"]\n'
        "    deploy:\n      replicas: 2\n      restart_policy: {condition: none}\n"
    )
    lab.carte(lab.nodes[0], "apply", "-f", str(compose), "-n", "app")

    def exited() -> list[str]:
        rows = placements(lab)
        done = len(rows) == 2 and all(row.get("state") == "exited" for row in rows)
        return sorted(row["container_id"] for row in rows) if done else []

    first = lab.wait("2 exited replicas", exited, 60)
    time.sleep(3)
    assert exited() == first, "an exited one-shot replica is left as it is"
    remove_stack(lab)


def test_a_service_joining_another_s_network_and_volumes_runs_on_its_node(
    lab: WorkloadLab, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n"
        "  db:\n"
        "    image: busybox:latest\n"
        '    command: ["sh", "-c", "echo from-db > /data/hello; exec sleep 3600"]\n'
        "    stop_grace_period: 1s\n"
        f'    volumes: ["{shared}:/data"]\n'
        "  side:\n"
        "    image: busybox:latest\n"
        '    command: ["sleep", "3600"]\n'
        "    stop_grace_period: 1s\n"
        "    network_mode: service:db\n"
        "    volumes_from: [db:ro]\n"
        "    deploy: {replicas: 2}\n"
    )
    lab.carte(lab.nodes[0], "apply", "-f", str(compose), "-n", "app")

    def placed() -> dict[str, list[str]]:
        answer = lab.carte(lab.nodes[0], "--format", "json", "stack", "ps", "app").stdout
        rows = json.loads(answer)
        nodes: dict[str, list[str]] = {}
        for row in rows:
            nodes.setdefault(row["service"], []).append(row["node"] if row["ready"] else "")
        ready = len(rows) == 3 and all(all(found) for found in nodes.values())
        return nodes if ready else {}

    nodes = lab.wait("db and 2 sides ready", placed, 60)
    (home,) = nodes["db"]
    assert nodes["side"] == [home, home]
    node = next(n for n in lab.nodes if n.name == home)

    def run(name: str, *command: str) -> subprocess.CompletedProcess[str]:
        return lab.carte(node, "exec", name, *command, check=False)

    assert run("app_side_1", "cat", "/data/hello").stdout == "from-db\n"
    assert run("app_side_1", "touch", "/data/other").returncode != 0, "volumes_from db:ro"
    own = run("app_db_1", "readlink", "/proc/self/ns/net").stdout
    assert own and run("app_side_2", "readlink", "/proc/self/ns/net").stdout == own
    remove_stack(lab)


def test_a_secret_reaches_the_node_that_runs_the_replica_and_no_store(
    lab: WorkloadLab, tmp_path: Path
) -> None:
    (tmp_path / "token.txt").write_text("s3cret-value\n")
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n"
        "  web:\n"
        "    image: busybox:latest\n"
        '    command: ["sleep", "3600"]\n'
        "    stop_grace_period: 1s\n"
        "    secrets: [token]\n"
        "    deploy: {placement: {constraints: [node.role==worker]}}\n"
        "secrets:\n"
        "  token: {file: ./token.txt}\n"
    )
    lab.carte(lab.nodes[0], "apply", "-f", str(compose), "-n", "app")
    lab.wait("1 ready", lambda: sum(ready_per_node(lab).values()) == 1, 60)
    (home,) = ready_per_node(lab)
    node = next(n for n in lab.nodes if n.name == home)
    read = lab.carte(node, "exec", "app_web_1", "cat", "/run/secrets/token").stdout
    assert read == "s3cret-value\n"
    mode = lab.carte(node, "exec", "app_web_1", "stat", "-c", "%a", "/run/secrets/token").stdout
    assert mode.strip() == "444"
    stored = subprocess.run(
        ["grep", "-rl", "s3cret-value", str(node.daemon.root)], capture_output=True, text=True
    )
    assert stored.stdout == "", "the worker's store never holds the secret"
    files = node.daemon.run_root / "cluster-files"
    assert (files / "app_web_1").is_dir()
    remove_stack(lab)
    lab.wait("its files gone", lambda: not (files / "app_web_1").exists(), 10)


def test_drain_moves_replicas_without_dropping_ready_ones(lab: WorkloadLab, tmp_path: Path) -> None:
    apply(lab, tmp_path, 6)
    lab.wait("6 ready", lambda: sum(ready_per_node(lab).values()) == 6, 60)
    lab.carte(lab.nodes[0], "node", "drain", "node2")
    lowest = 6
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        per_node = ready_per_node(lab)
        lowest = min(lowest, sum(per_node.values()))
        if "node2" not in per_node and "node2" not in running(lab):
            break
        time.sleep(0.2)
    assert "node2" not in running(lab)
    assert ready_per_node(lab) == {"node1": 3, "node3": 3}
    assert lowest >= 6, f"ready replicas dropped to {lowest} during the drain"
    lab.carte(lab.nodes[0], "node", "activate", "node2")
    remove_stack(lab)


def test_a_healed_partition_leaves_no_extra_replica(lab: WorkloadLab, tmp_path: Path) -> None:
    """node3 is cut off from the control plane by an nftables drop in its namespace: its
    lease expires, its replicas are started elsewhere while its own keep running (cut off);
    once the link heals, its agent stops them within one reconcile period."""
    apply(lab, tmp_path, 6)
    lab.wait("6 ready", lambda: sum(ready_per_node(lab).values()) == 6, 60)
    control, _, cut = lab.nodes
    _partition(cut, control.address)
    try:
        lab.wait("node3 down", lambda: _status(lab, "node3") == "down", TTL + 10)
        lab.wait(
            "6 ready on node1 and node2",
            lambda: ready_per_node(lab) == {"node1": 3, "node2": 3},
            30,
        )
        assert running(lab)["node3"] == 2, "a node cut off keeps its containers running"
    finally:
        healed = time.monotonic()
        _heal(cut)
    lab.wait("back to 6 running", lambda: running(lab).total() == 6, 15)
    extra_for = time.monotonic() - healed
    print(f"extra replicas gone {extra_for:.1f} s after the partition healed")
    assert extra_for <= AGENT_PERIOD + 3 + 2, f"{extra_for:.1f} s of extra replicas after the heal"
    assert running(lab) == {"node1": 3, "node2": 3}
    remove_stack(lab)


def _partition(node: LabNode, peer: str) -> None:
    table = (
        "table inet j2part {\n"
        f"  chain input {{ type filter hook input priority 0; ip saddr {peer} drop; }}\n"
        f"  chain output {{ type filter hook output priority 0; ip daddr {peer} drop; }}\n"
        "}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", node.namespace, "nft", "-f", "-"],
        input=table, text=True, check=True,
    )  # fmt: skip


def _heal(node: LabNode) -> None:
    subprocess.run(
        ["ip", "netns", "exec", node.namespace, "nft", "delete", "table", "inet", "j2part"],
        check=False,
    )


def test_a_killed_node_replicas_come_back_elsewhere(lab: WorkloadLab, tmp_path: Path) -> None:
    apply(lab, tmp_path, 6)
    lab.wait("6 ready", lambda: sum(ready_per_node(lab).values()) == 6, 60)
    victim = lab.nodes[2]
    daemon = victim.daemon
    killed = time.monotonic()
    daemon.stop(signal.SIGKILL)
    _kill_containers(daemon)  # the machine is gone: its containers die with it
    lab.wait(
        "6 ready without node3",
        lambda: (n := ready_per_node(lab)).total() == 6 and "node3" not in n,
        TTL + 30,
    )
    replaced = time.monotonic() - killed
    print(f"node loss to 6 ready replicas again: {replaced:.1f} s (lease {TTL} s)")
    assert replaced <= TTL + 10, f"replaced {replaced:.1f} s after the loss"
    assert running(lab) == {"node1": 3, "node2": 3}
    remove_stack(lab)


def test_an_etcd_restart_stops_no_container(lab: WorkloadLab, tmp_path: Path) -> None:
    apply(lab, tmp_path, 6)
    lab.wait("6 ready", lambda: sum(ready_per_node(lab).values()) == 6, 60)
    before = _container_ids(lab)
    assert lab.etcd is not None
    workers = _container_ids(lab, lab.nodes[1:])
    lab.etcd.stop()
    time.sleep(TTL * 2)  # leases lapse meanwhile (the control plane's own ps needs etcd)
    assert _container_ids(lab, lab.nodes[1:]) == workers
    lab.etcd.start()
    lab.wait("6 ready again", lambda: sum(ready_per_node(lab).values()) == 6, 60)
    time.sleep(3)
    assert _container_ids(lab) == before, "no replica was stopped or replaced"
    remove_stack(lab)


def _container_ids(lab: ClusterLab, nodes: list[LabNode] | None = None) -> set[str]:
    ids: set[str] = set()
    for node in lab.nodes if nodes is None else nodes:
        ids |= set(node.daemon.client("ps", "-q", "--no-trunc").stdout.split())
    return ids


def _statuses(lab: ClusterLab) -> list[str]:
    listed = json.loads(lab.carte(lab.nodes[0], "--format", "json", "node", "ls").stdout)
    return [str(n["status"]) for n in listed]


def _status(lab: ClusterLab, name: str) -> str:
    listed = json.loads(lab.carte(lab.nodes[0], "--format", "json", "node", "ls").stdout)
    return str(next(n["status"] for n in listed if n["name"] == name))


def _kill_containers(daemon: Daemon) -> None:
    """SIGKILL the shims and processes of every container ``daemon`` runs (its state stays,
    as on a machine that lost power)."""
    runtime = daemon.run_root / "runtime"
    ids = [p.name for p in runtime.iterdir()] if runtime.is_dir() else []
    for container_id in ids:
        for cgroup in cgroup_dirs(container_id):
            procs = cgroup / "cgroup.procs"
            for pid in procs.read_text().split() if procs.exists() else []:
                _kill(int(pid))
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                words = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-id" in words and any(i.encode() in words for i in ids):
                _kill(int(proc.name))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
