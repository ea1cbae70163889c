"""Metrics, audit and the dashboard on a 3-node cluster (the netns lab of
tests/support/cluster.py, a real etcd), one lab for both tests, running a replica per node:

* a prometheus server on the host scrapes every node's ``/metrics`` over its TCP listener with
  the admin's client certificate (mutual TLS, as the README's scrape config does); PromQL
  reads back the nodes the control plane knows and a replica's memory on a worker; a scrape
  without a certificate is refused; a state change sent over TCP is in the control plane's
  audit log with the certificate's subject;
* the control plane's dashboard, in headless Chromium, shows the three nodes with the load
  each one's heartbeats report and the replicas per node; over the TCP listener it answers
  only the admin's certificate (401 without).
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_server import prometheus, query
from selenium.webdriver.common.by import By
from support.cluster import API_PORT, SLEEPERS, LabNode, WorkloadLab
from support.containers import wait_for

sys.path.append(str(Path(__file__).parents[1] / "ui"))  # the dashboard tests' browser
from ui_browser import NetnsForward, heading, login, open_browser, shoot

TTL = 5
UI_PORT = 7780  # the dashboard's default, on the control plane namespace's own loopback
EVERYWHERE = {"node1": 1, "node2": 1, "node3": 1}


class ObservedLab(WorkloadLab):
    """Every node serves the API on its LAN address; the control plane the dashboard too."""

    def config(self, node: LabNode, *, control: bool) -> str:
        named = f"cluster: {{name: {node.name},"
        text = super().config(node, control=control)
        if control:
            return text + "handlers: {options: {ui: {enabled: true}}}\n"
        return text.replace(named, f"{named} listen: {node.listen},")


def running_per_node(lab: ObservedLab) -> dict[str, int]:
    listed = lab.carte(lab.nodes[0], "--format", "json", "service", "ps", "app_web").stdout
    counts: dict[str, int] = {}
    for row in json.loads(listed):
        if row.get("state") == "running":  # before placements exist, ps lists local rows
            counts[row["node"]] = counts.get(row["node"], 0) + 1
    return counts


@pytest.fixture(scope="module")
def lab(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedLab]:
    with ObservedLab(3, pool="10.82.0.0/16:24", node_ttl=TTL, leader_ttl=TTL) as lab:
        try:
            lab.form()
            control = lab.nodes[0]
            lab.carte(control, "import", str(busybox_tar), "busybox:latest")
            compose = tmp_path_factory.mktemp("app") / "compose.yaml"
            reserve = '      resources: {reservations: {cpus: "0.25", memory: 16M}}\n'
            compose.write_text(SLEEPERS.format(replicas=3, extra=reserve))
            lab.carte(control, "apply", "-f", str(compose), "-n", "app")
            lab.wait("a running replica per node", lambda: running_per_node(lab) == EVERYWHERE, 90)
            yield lab
            lab.carte(control, "stack", "rm", "app")
        finally:
            lab.empty_and_stop()


def scrape_config(lab: ObservedLab) -> str:
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


def test_prometheus_scrapes_every_node_over_mutual_tls(lab: ObservedLab, tmp_path: Path) -> None:
    control, worker, _ = lab.nodes
    with prometheus(tmp_path, scrape_config(lab)) as server:
        on_worker = f'carte_container_memory_bytes{{instance="{worker.address}:{API_PORT}"}} > 0'
        wait_for(lambda: query(server, on_worker), 60, "a replica's memory on the worker")
        nodes = f'carte_node_ready{{instance="{control.address}:{API_PORT}"}} == 1'
        wait_for(lambda: len(query(server, nodes)) == 3, 30, "3 nodes ready, from node1")
        ready = {s["metric"]["node"] for s in query(server, nodes)}  # type: ignore[index]
        assert ready == set(EVERYWHERE)
        # Allocation: each node's one replica reserves 0.25 CPU and 16 MiB (deploy.resources).
        for metric, value in (("cpus", 0.25), ("memory_bytes", 16 * 2**20)):
            series = f'carte_node_reserved_{metric}{{instance="{control.address}:{API_PORT}"}}'
            found = {s["metric"]["node"]: float(s["value"][1]) for s in query(server, series)}  # type: ignore[index]
            assert found == {name: value for name in EVERYWHERE}, (metric, found)
        up = 'up{job="carte"} == 1'
        wait_for(lambda: len(query(server, up)) == 3, 30, "every scrape to succeed")

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


def _get_over_tls(lab: ObservedLab, path: str, *, certificate: bool) -> tuple[int, bytes]:
    """GET ``path`` from the control plane's TCP listener (the cluster CA verified), with the
    admin's client certificate or none."""
    context = ssl.create_default_context(cafile=str(lab.certs / "ca.pem"))
    context.check_hostname = False
    if certificate:
        context.load_cert_chain(str(lab.certs / "cert.pem"), str(lab.certs / "key.pem"))
    address = lab.nodes[0].address
    connection = http.client.HTTPSConnection(address, API_PORT, timeout=15, context=context)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def test_dashboard_shows_three_nodes_and_replicas_per_node(lab: ObservedLab) -> None:
    control = lab.nodes[0]
    forward = NetnsForward(control.namespace, UI_PORT)
    browser = open_browser()
    try:
        base = f"http://127.0.0.1:{forward.port}"
        login(browser, base, control.daemon.root / "ui-token")
        assert heading(browser) == "Nodes"
        names = sorted(e.text for e in browser.find_elements(By.CLASS_NAME, "node-name"))
        assert names == ["node1", "node2", "node3"]
        replicas = [e.text for e in browser.find_elements(By.CLASS_NAME, "node-replicas")]
        assert replicas == ["1", "1", "1"]
        loads = [e.text for e in browser.find_elements(By.CLASS_NAME, "node-load")]
        assert len(loads) == 3, loads  # each node's own, from its heartbeats
        assert all(re.fullmatch(r"load \d+\.\d\d · memory \d+ %", load) for load in loads), loads
        grid = browser.find_elements(By.CSS_SELECTOR, "main table")[1]
        assert [c.text for c in grid.find_elements(By.TAG_NAME, "th")] == ["Service", *names]
        assert [c.text for c in grid.find_elements(By.TAG_NAME, "td")] == ["app/web", "1", "1", "1"]
        shoot(browser, "cluster-nodes")
        browser.get(f"{base}/ui/stacks")
        per_node = browser.find_element(By.CLASS_NAME, "per-node").text
        assert per_node == "node1: 1, node2: 1, node3: 1"
        assert browser.find_element(By.CLASS_NAME, "running").text == "3"
        shoot(browser, "cluster-stacks")
    finally:
        browser.quit()
        forward.close()

    status, body = _get_over_tls(lab, "/ui/nodes", certificate=False)
    assert status == 401 and b"node2" not in body
    status, body = _get_over_tls(lab, "/ui/nodes", certificate=True)
    assert status == 200 and b"node2" in body and b"<html" in body
