"""A cluster of real daemons in network namespaces on a LAN bridge, with a real etcd: init,
join, node commands over mutual TLS, refused clients, NodeDown on a killed node, leader
failover. One lab for the module (3 nodes: two control planes, one worker; 3 s leases);
tests run in file order and the last one kills the leader.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import signal
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.cluster import API_PORT, ClusterLab, LabNode
from support.daemon import Daemon

from carte.api.cluster import CaRecord
from carte.cluster.pki import ClusterCA, write_bundle

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.peers]

TTL = 3


@pytest.fixture(scope="module")
def lab() -> Iterator[ClusterLab]:
    with ClusterLab(3, node_ttl=TTL, leader_ttl=TTL) as lab:
        first, second, worker = lab.nodes
        lab.start(first, control=True)
        lab.init(first)
        lab.start(second, control=True)
        assert lab.init(second) == ""  # the etcd holds a cluster: another control plane
        lab.start(worker)
        lab.join(worker, "--label", "zone=a")
        yield lab


def nodes(lab: ClusterLab, node: LabNode) -> dict[str, dict[str, Any]]:
    result = lab.carte(node, "--format", "json", "node", "ls", host=lab.server)
    return {record["name"]: record for record in json.loads(result.stdout)}


def status(lab: ClusterLab, node: LabNode) -> dict[str, Any]:
    result = lab.carte(node, "--format", "json", "cluster", "status")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def refused(result: Any) -> str:
    """The one line a refused command printed (non-zero exit, no traceback)."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


def test_nodes_join_and_are_listed_over_mutual_tls(lab: ClusterLab) -> None:
    worker = lab.nodes[2]
    listed = nodes(lab, worker)  # from the worker's namespace, over the LAN, admin certificate
    assert set(listed) == {"node1", "node2", "node3"}
    assert all(record["status"] == "ready" for record in listed.values())
    assert listed["node3"]["labels"] == {"zone": "a"}
    assert listed["node3"]["role"] == "worker" and listed["node1"]["role"] == "control"
    assert listed["node3"]["addresses"] == [worker.address]
    assert status(lab, worker)["role"] == "worker"
    lab.carte(worker, "node", "update", "--label-add", "disk=ssd", "node3", host=lab.server)
    lab.carte(worker, "node", "drain", "node3", host=lab.server)
    record = nodes(lab, worker)["node3"]
    assert record["labels"] == {"zone": "a", "disk": "ssd"}
    assert record["availability"] == "drain"
    lab.carte(worker, "node", "activate", "node3", host=lab.server)
    lab.carte(worker, "node", "update", "--label-rm", "disk", "node3", host=lab.server)
    assert nodes(lab, worker)["node3"]["labels"] == {"zone": "a"}


def test_every_node_shows_its_load_and_heartbeats_leave_its_record_alone(
    lab: ClusterLab,
) -> None:
    worker = lab.nodes[2]
    lab.wait("a load for every node", lambda: all(r["load"] for r in nodes(lab, worker).values()),
             TTL * 2)  # fmt: skip
    inspected = lab.carte(worker, "--format", "json", "node", "inspect", "node3", host=lab.server)
    (record,) = json.loads(inspected.stdout)
    load = record["load"]
    assert load["cpus"] == os.cpu_count() and load["load1"] >= 0
    assert 0 < load["memory_used"] < load["memory_total"]
    table = lab.carte(worker, "node", "ls", host=lab.server).stdout.splitlines()
    assert table[0].split()[4:6] == ["LOAD", "MEMORY"]
    row = next(line.split() for line in table if line.startswith("node3"))
    assert re.fullmatch(r"\d+\.\d\d/\d+", row[4]) and row[6] == "GiB", row
    etcd = lab.etcd
    assert etcd is not None

    def written() -> object:
        reply = etcd.call("/v3/kv/range", {"key": _b64("carte/cluster/members/node3")})
        return reply["kvs"][0]["mod_revision"]  # type: ignore[index]

    before = written()
    lab.wait("a newer load", lambda: nodes(lab, worker)["node3"]["load"] != load, TTL * 2)
    assert written() == before, "a heartbeat that only moves the load rewrote the node's record"


def test_a_restarted_worker_stays_joined(lab: ClusterLab) -> None:
    worker = lab.nodes[2]
    worker.daemon.stop()
    lab.start(worker)
    assert status(lab, worker)["server"] == lab.server
    assert nodes(lab, worker)["node3"]["status"] == "ready"


def test_bad_tokens_are_refused_in_one_line(lab: ClusterLab) -> None:
    worker = lab.nodes[2]
    spare = lab.start(worker, fresh=True)  # a second daemon of its own on that node
    try:
        malformed = lab.carte(
            worker, "node", "join", "--token", "nope", "--server", lab.server, daemon=spare,
            check=False,
        )  # fmt: skip
        assert "join token is malformed" in refused(malformed)
        ca_hash, _ = lab.token.split("-")[1], lab.token.split("-")[2]
        unknown = lab.carte(
            worker, "node", "join", "--token", f"CARTE1-{ca_hash}-{'0' * 32}",
            "--server", lab.server, "--name", "spare", daemon=spare, check=False,
        )  # fmt: skip
        assert "not known to this cluster" in refused(unknown)
        foreign = lab.carte(
            worker, "node", "join", "--token", f"CARTE1-{'1' * 64}-{'0' * 32}",
            "--server", lab.server, "--name", "spare", daemon=spare, check=False,
        )  # fmt: skip
        assert "not the one the join token names" in refused(foreign)
        # a revoked token
        made = lab.carte(worker, "--format", "json", "cluster", "join-token", host=lab.server)
        token = json.loads(made.stdout)
        lab.carte(worker, "cluster", "join-token", "--revoke", token["id"], host=lab.server)
        revoked = lab.carte(
            worker, "node", "join", "--token", token["token"], "--server", lab.server,
            "--name", "spare", daemon=spare, check=False,
        )  # fmt: skip
        assert "is revoked" in refused(revoked)
        assert "spare" not in nodes(lab, worker)
    finally:
        spare.stop()


def test_clients_without_a_valid_certificate_are_refused(lab: ClusterLab, tmp_path: Path) -> None:
    worker = lab.nodes[2]
    only_ca = tmp_path / "only-ca"
    only_ca.mkdir()
    (only_ca / "ca.pem").write_bytes((lab.certs / "ca.pem").read_bytes())
    line = refused(lab.carte(worker, "node", "ls", host=lab.server, certs=only_ca, check=False))
    assert "needs a client certificate signed by the cluster CA" in line

    assert lab.etcd is not None
    reply = lab.etcd.call("/v3/kv/range", {"key": _b64("carte/cluster/ca")})
    record = json.loads(_unb64(reply["kvs"][0]["value"]))  # type: ignore[index]
    ca = CaRecord(**record)
    authority = ClusterCA(ca.cert.encode(), ca.key.encode())
    old = authority.issue_client(
        "old-admin",
        valid_days=1,
        now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3),
    )
    assert old.key is not None
    expired = tmp_path / "expired"
    write_bundle(expired, ca=authority.cert_pem, cert=old.cert, key=old.key)
    line = refused(lab.carte(worker, "node", "ls", host=lab.server, certs=expired, check=False))
    assert "refused this client's certificate" in line and "expired" in line

    foreign = ClusterCA.create()
    stranger = foreign.issue_client("stranger")
    assert stranger.key is not None
    other = tmp_path / "other"
    write_bundle(other, ca=authority.cert_pem, cert=stranger.cert, key=stranger.key)
    line = refused(lab.carte(worker, "node", "ls", host=lab.server, certs=other, check=False))
    assert "refused this client's certificate" in line


def test_secret_contents_are_not_on_the_command_route(lab: ClusterLab) -> None:
    """ReadServiceFiles (a service's secret contents, for the node running its replica) is
    only handler-to-handler: 404 on the socket and over mutual TLS, not in the OpenAPI
    document; a node reads its own replicas' files at GET /v1/cluster/files."""
    control = lab.nodes[0]
    body = {"stack": "app", "service": "web"}
    on_socket = control.daemon.command_("ReadServiceFiles", **body)
    context = ssl.create_default_context(cafile=str(lab.certs / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(str(lab.certs / "cert.pem"), str(lab.certs / "key.pem"))
    tls = http.client.HTTPSConnection(control.address, API_PORT, timeout=15, context=context)
    try:
        tls.request("POST", "/v1/commands/ReadServiceFiles", json.dumps(body).encode())
        over_tls = tls.getresponse()
        answers = [(on_socket.status, on_socket.body), (over_tls.status, over_tls.read())]
    finally:
        tls.close()
    for status_code, answer in answers:
        error = json.loads(answer)["error"]
        assert (status_code, error["code"]) == (404, "not_found"), answer
        assert error["message"] == (
            'command "ReadServiceFiles" is unknown; see /v1/openapi.json for the list'
        )
    paths = control.daemon.request("GET", "/v1/openapi.json").json()["paths"]
    assert "/v1/commands/ReadServiceFiles" not in paths
    assert "/v1/cluster/files" in paths and "/v1/commands/ListNodes" in paths


@contextmanager
def joined_spare(lab: ClusterLab, node: LabNode, name: str) -> Iterator[Daemon]:
    """A second daemon on `node`, joined to the cluster as `name` with a fresh token; stopped
    after the block."""
    spare = lab.start(node, fresh=True)
    try:
        token = json.loads(
            lab.carte(node, "--format", "json", "cluster", "join-token", host=lab.server).stdout
        )["token"]
        nobody = f"tcp://{lab.gateway}:{API_PORT}"  # the host's end of the LAN: refused
        joined = lab.carte(
            node, "node", "join", "--token", token, "--server", nobody, "--server", lab.server,
            "--name", name, daemon=spare,
        )  # fmt: skip
        assert joined.stdout == f"Node {name} joined {lab.server}\n"
        yield spare
    finally:
        spare.stop()


def test_a_removed_node_is_revoked(lab: ClusterLab) -> None:
    worker = lab.nodes[2]
    with joined_spare(lab, worker, "spare") as spare:
        assert nodes(lab, worker)["spare"]["status"] == "ready"
        ready = refused(lab.carte(worker, "node", "rm", "spare", host=lab.server, check=False))
        assert "is ready" in ready
        lab.carte(worker, "node", "rm", "--force", "spare", host=lab.server)
        assert "spare" not in nodes(lab, worker)
        node_certs = spare.root / "cluster"
        line = refused(lab.carte(worker, "node", "ls", host=lab.server, certs=node_certs,
                                 check=False))  # fmt: skip
        assert "was revoked" in line
        lab.wait("the removed node logs its refused heartbeat",
                 lambda: "was revoked" in spare.log(), TTL * 2)  # fmt: skip


def test_a_node_leaves_drained_and_revoked(lab: ClusterLab) -> None:
    """`carte node leave` (what install.sh --uninstall runs on a node)."""
    worker = lab.nodes[2]
    with joined_spare(lab, worker, "leaver") as spare:
        assert "leaver" in nodes(lab, worker)
        left = lab.carte(worker, "--format", "json", "node", "leave", daemon=spare)
        assert json.loads(left.stdout) == {"drained": True}
        assert "leaver" not in nodes(lab, worker)
        assert status_of(lab, worker, spare)["role"] == "none"
        line = refused(lab.carte(worker, "node", "ls", host=lab.server,
                                 certs=spare.root / "cluster", check=False))  # fmt: skip
        assert "cannot load the cluster certificates" in line  # the bundle went with it


def status_of(lab: ClusterLab, node: LabNode, daemon: Any) -> dict[str, Any]:
    result = lab.carte(node, "--format", "json", "cluster", "status", daemon=daemon)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_a_killed_node_goes_down_within_its_lease_and_comes_back(lab: ClusterLab) -> None:
    first, _, worker = lab.nodes
    killed, since = time.monotonic(), time.time()
    worker.daemon.stop(signal.SIGKILL)
    lab.wait("node3 down", lambda: nodes(lab, first)["node3"]["status"] == "down", TTL + 4)
    assert time.monotonic() - killed < TTL + 4
    events = [fact for fact in _facts(lab, "NodeDown") if fact["time"] >= since]
    assert [fact["id"] for fact in events] == ["node3"]
    lab.start(worker)
    lab.wait("node3 ready again", lambda: nodes(lab, first)["node3"]["status"] == "ready", 10)
    ups = [fact for fact in _facts(lab, "NodeUp") if fact["time"] >= since]
    assert [fact["id"] for fact in ups] == ["node3"]


def test_when_the_leader_dies_the_other_control_plane_takes_over(lab: ClusterLab) -> None:
    first, second, _ = lab.nodes
    leader = first if status(lab, first)["is_leader"] else second
    other = second if leader is first else first
    assert status(lab, other)["leader"] == leader.name
    leader.daemon.stop(signal.SIGKILL)
    lab.wait("the other control plane leads", lambda: status(lab, other)["is_leader"], TTL + 5)
    elected = [fact for fact in _journal(other, "LeaderElected") if fact["is_self"]]
    assert elected and elected[-1]["id"] == other.name and elected[-1]["fence"] > 0


def _facts(lab: ClusterLab, kind: str) -> list[dict[str, Any]]:
    """Facts of ``kind`` on whichever control plane leads (it publishes node facts)."""
    for node in lab.nodes[:2]:
        if node.daemon.process is None or node.daemon.process.poll() is not None:
            continue
        if status(lab, node)["is_leader"]:
            return _journal(node, kind)
    raise AssertionError("no control plane leads")


def _journal(node: LabNode, kind: str) -> list[dict[str, Any]]:
    found = []
    stream = node.daemon.stream(f"/v1/events?since=0&type={kind}", timeout=2)
    try:
        for fact in stream:
            found.append(fact)
    except TimeoutError:
        pass
    finally:
        stream.close()
    return found


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)
