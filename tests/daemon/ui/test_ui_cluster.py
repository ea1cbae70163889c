"""The dashboard of a 3-node cluster (the netns lab of tests/support/cluster.py, a real etcd):
the control plane's nodes page, in headless Chromium, shows the three nodes and where the
replicas of a stack run; over the cluster's TCP listener the dashboard answers only a client
certificate of the cluster CA (401 without one)."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from support.cluster import API_PORT, SLEEPERS, LabNode, WorkloadLab
from ui_browser import NetnsForward, heading, login, open_browser, shoot

TTL = 5
UI_PORT = 7780  # the default, on the control plane namespace's own loopback


class DashboardLab(WorkloadLab):
    """A workload lab whose control plane serves the dashboard."""

    def config(self, node: LabNode, *, control: bool) -> str:
        extra = "handlers: {options: {ui: {enabled: true}}}\n" if control else ""
        return super().config(node, control=control) + extra


@pytest.fixture(scope="module")
def lab(busybox_tar: Path) -> Iterator[DashboardLab]:
    with DashboardLab(3, pool="10.82.0.0/16:24", node_ttl=TTL, leader_ttl=TTL) as lab:
        try:
            lab.form()
            lab.carte(lab.nodes[0], "import", str(busybox_tar), "busybox:latest")
            yield lab
        finally:
            lab.empty_and_stop()


def running_per_node(lab: DashboardLab) -> dict[str, int]:
    listed = lab.carte(lab.nodes[0], "--format", "json", "service", "ps", "app_web").stdout
    counts: dict[str, int] = {}
    for row in json.loads(listed):
        if row["state"] == "running":
            counts[row["node"]] = counts.get(row["node"], 0) + 1
    return counts


def _get_over_tls(lab: DashboardLab, path: str, *, certificate: bool) -> tuple[int, bytes]:
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


def test_nodes_page_shows_three_nodes_and_replicas_per_node(
    lab: DashboardLab, tmp_path: Path
) -> None:
    control = lab.nodes[0]
    compose = tmp_path / "compose.yaml"
    compose.write_text(SLEEPERS.format(replicas=3, extra=""))
    lab.carte(control, "apply", "-f", str(compose), "-n", "app")
    everywhere = {"node1": 1, "node2": 1, "node3": 1}
    lab.wait("a running replica per node", lambda: running_per_node(lab) == everywhere, 90)

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

    # the same pages over the cluster's TCP listener: only with the admin's certificate
    status, body = _get_over_tls(lab, "/ui/nodes", certificate=False)
    assert status == 401 and b"node2" not in body
    status, body = _get_over_tls(lab, "/ui/nodes", certificate=True)
    assert status == 200 and b"node2" in body and b"<html" in body
    lab.carte(control, "stack", "rm", "app")
