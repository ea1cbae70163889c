"""Metrics and audit on a 2-node cluster (the netns lab of tests/support/cluster.py, a real
etcd): a prometheus server on the host scrapes the control plane's and the worker's
``/metrics`` over their TCP listeners with the admin's client certificate (mutual TLS, as the
README's scrape config does), and PromQL reads back the nodes the control plane knows and a
replica's memory on the worker; a scrape without a certificate is refused. A state change
sent over TCP is in the control plane's audit log with the certificate's subject."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_server import prometheus, query
from support.cluster import API_PORT, SLEEPERS, LabNode, WorkloadLab
from support.containers import wait_for

TTL = 5


class ScrapedLab(WorkloadLab):
    """Every node serves the API on its LAN address (the control plane does anyway)."""

    def config(self, node: LabNode, *, control: bool) -> str:
        named = f"cluster: {{name: {node.name},"
        listening = f"{named} listen: {node.listen}," if not control else named
        return super().config(node, control=control).replace(named, listening)


@pytest.fixture(scope="module")
def lab(busybox_tar: Path) -> Iterator[ScrapedLab]:
    with ScrapedLab(2, pool="10.83.0.0/16:24", node_ttl=TTL, leader_ttl=TTL) as lab:
        try:
            lab.form()
            lab.carte(lab.nodes[0], "import", str(busybox_tar), "busybox:latest")
            yield lab
        finally:
            lab.empty_and_stop()


def scrape_config(lab: ScrapedLab) -> str:
    targets = ", ".join(f"'{node.address}:{API_PORT}'" for node in lab.nodes)
    return (
        "  - job_name: carte\n"
        "    scheme: https\n"
        "    tls_config:\n"
        f"      ca_file: {lab.certs / 'ca.pem'}\n"
        f"      cert_file: {lab.certs / 'cert.pem'}\n"
        f"      key_file: {lab.certs / 'key.pem'}\n"
        f"    static_configs: [{{targets: [{targets}]}}]\n"
    )


def audit(node: LabNode) -> list[dict[str, Any]]:
    log = node.daemon.root / "audit" / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_prometheus_scrapes_both_nodes_over_mutual_tls(lab: ScrapedLab, tmp_path: Path) -> None:
    control, worker = lab.nodes
    compose = tmp_path / "compose.yaml"
    compose.write_text(SLEEPERS.format(replicas=2, extra=""))
    lab.carte(control, "apply", "-f", str(compose), "-n", "app")

    with prometheus(tmp_path, scrape_config(lab)) as server:
        on_worker = f'carte_container_memory_bytes{{instance="{worker.address}:{API_PORT}"}} > 0'
        wait_for(lambda: query(server, on_worker), 90, "a replica's memory on the worker")
        nodes = f'carte_node_ready{{instance="{control.address}:{API_PORT}"}} == 1'
        wait_for(lambda: len(query(server, nodes)) == 2, 30, "both nodes ready, from node1")
        ready = {s["metric"]["node"] for s in query(server, nodes)}  # type: ignore[index]
        assert ready == {"node1", "node2"}
        up = 'up{job="carte"} == 1'
        wait_for(lambda: len(query(server, up)) == 2, 30, "both scrapes to succeed")

    context = ssl.create_default_context(cafile=str(lab.certs / "ca.pem"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"https://{worker.address}:{API_PORT}/metrics", timeout=10, context=context
        )
    refused.value.close()
    assert refused.value.code == 401

    failed = lab.carte(worker, "rm", "nope", host=lab.server, check=False)
    assert failed.returncode != 0
    wait_for(lambda: any(e["object"] == "nope" for e in audit(control)), 10, "the rm audited")
    (removal,) = [e for e in audit(control) if e["object"] == "nope"]
    who = removal["who"]
    assert who["transport"] == "tcp" and who["address"].startswith(worker.address), removal
    assert (who["cn"], who["role"], removal["status"]) == ("admin", "client", 404), removal
    lab.carte(control, "stack", "rm", "app")
