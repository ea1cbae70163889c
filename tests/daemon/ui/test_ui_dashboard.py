"""The web dashboard on one node (issue 18, part 3), in Debian's headless Chromium: after
logging in with the token from ROOT/ui-token every page loads; the scale form changes the
service as `carte service scale` would (checked with `carte service ls` and `ps`); a line a
container echoes later arrives in its page over the log WebSocket, with CPU/memory samples
drawn; and the dashboard gives nothing to a request without the session cookie, the CSRF
token or a loopback address. A screenshot of each page is saved (see ui_browser)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from support import REPO
from support.containers import ok, wait_until
from support.daemon import Daemon, refused_start
from support.etcd import free_port
from support.module_daemon import ModuleDaemon
from ui_browser import heading, login, open_browser, shoot

PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
CONFIG = (
    'network: {pools: ["10.81.0.0/16:24"], dns_upstreams: ["127.0.0.1:9"]}\n'
    f'handlers: {{options: {{ui: {{enabled: true, listen: "127.0.0.1:{PORT}"}}}}}}\n'
)
WEB = """\
services:
  web:
    image: busybox
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    deploy:
      replicas: 1
"""


@pytest.fixture(scope="module")
def module(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    with ModuleDaemon(busybox_tar, config=CONFIG, stacks=True, networks=True) as made:
        yield made


@pytest.fixture
def daemon(module: ModuleDaemon) -> Iterator[Daemon]:
    with module.test() as made:
        yield made


@pytest.fixture(scope="module")
def browser(module: ModuleDaemon) -> Iterator[WebDriver]:
    driver = open_browser()
    try:
        login(driver, BASE, module.daemon.root / "ui-token")
        yield driver
    finally:
        driver.quit()


def services(daemon: Daemon) -> dict[str, int]:
    rows = json.loads(ok(daemon.client("--format", "json", "service", "ls", "demo")))
    return {row["name"]: row["desired"] for row in rows}


def running_replicas(daemon: Daemon) -> int:
    listed = ok(daemon.client("ps", "-q", "--filter", "label=com.carte.service=web"))
    return len(listed.split())


def audited(daemon: Daemon, route_end: str) -> list[dict[str, Any]]:
    """The audit log's entries whose route ends with ``route_end``."""
    lines = (daemon.root / "audit" / "audit.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["route"].endswith(route_end)]


def test_every_page_loads_and_the_scale_form_scales(
    daemon: Daemon, browser: WebDriver, tmp_path: Path
) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(WEB)
    ok(daemon.client("apply", "-f", str(compose), "-n", "demo"))
    wait_until(lambda: running_replicas(daemon) == 1, 30, "one running replica")

    browser.get(f"{BASE}/ui/nodes")
    assert heading(browser) == "Nodes"
    names = [e.text for e in browser.find_elements(By.CLASS_NAME, "node-name")]
    assert len(names) == 1, names
    wait_until(lambda: "demo/web" in browser.page_source, 10, "the replica on the node")
    shoot(browser, "nodes")

    browser.get(f"{BASE}/ui/stacks")
    assert heading(browser) == "Stacks & services"
    assert "Stack demo" in browser.page_source
    field = browser.find_element(By.CSS_SELECTOR, "form.scale input[name=replicas]")
    field.clear()
    field.send_keys("3")
    field.submit()
    wait_until(lambda: "Scaled demo/web to 3" in browser.page_source, 10, "the scale notice")
    assert services(daemon) == {"web": 3}  # what `carte service ls` shows
    scaled = wait_until(lambda: audited(daemon, "/scale"), 10, "the scale in the audit log")
    assert [(e["api"], e["object"], e["status"], e["who"]["role"]) for e in scaled] == [
        ("ui", "web", 303, "ui-session")
    ]
    wait_until(lambda: running_replicas(daemon) == 3, 30, "three running replicas (carte ps)")
    browser.refresh()
    assert browser.find_element(By.CLASS_NAME, "running").text == "3"
    screenshot = shoot(browser, "stacks")
    if os.environ.get("CARTE_UPDATE_DASHBOARD_PNG"):  # the README's picture, on request only
        shutil.copyfile(screenshot, REPO / "docs" / "dashboard.png")

    browser.find_element(By.LINK_TEXT, "web").click()
    assert heading(browser) == "Service demo/web"
    wait_until(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "main tbody tr")) == 3, 10, "3 rows"
    )
    assert browser.find_element(By.CLASS_NAME, "rollout-state").text
    shoot(browser, "service")

    browser.get(f"{BASE}/ui/containers")
    assert heading(browser) == "Containers"
    assert browser.page_source.count("demo/web") == 3
    shoot(browser, "containers")

    browser.get(f"{BASE}/ui/events")
    assert heading(browser) == "Events"
    types = {e.text for e in browser.find_elements(By.CLASS_NAME, "event-type")}
    assert {"ContainerStarted", "ServiceUpdated"} <= types, types
    shoot(browser, "events")


def test_live_logs_and_resource_charts(daemon: Daemon, browser: WebDriver) -> None:
    script = "echo first line; sleep 4; echo a later line; exec sleep 600"
    ok(daemon.client("run", "-d", "--name", "talker", "busybox", "sh", "-c", script))
    browser.get(f"{BASE}/ui/containers/talker")
    assert heading(browser) == "Container talker"
    logs = browser.find_element(By.ID, "logs")
    wait_until(lambda: "first line" in logs.text, 10, "the backlog in the page")
    assert "a later line" not in logs.text
    wait_until(lambda: "a later line" in logs.text, 15, "the later line, live")
    charts = browser.find_element(By.ID, "charts")
    wait_until(lambda: int(charts.get_attribute("data-samples") or 0) >= 3, 15, "3 samples")
    points = browser.find_element(By.CSS_SELECTOR, "#chart-memory polyline")
    assert len((points.get_attribute("points") or "").split()) >= 3
    assert "MiB" in browser.find_element(By.ID, "value-memory").text
    shoot(browser, "container")


def _ask(
    method: str, path: str, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """One plain HTTP request to the dashboard: no browser, no redirect followed."""
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    try:
        sent = {"content-type": "application/x-www-form-urlencoded", **(headers or {})}
        connection.request(method, path, body=body or None, headers=sent)
        reply = connection.getresponse()
        return reply.status, reply.read(), {k.lower(): v for k, v in reply.getheaders()}
    finally:
        connection.close()


def _websocket_status(path: str, headers: dict[str, str]) -> str:
    """The status line the dashboard answers a WebSocket handshake with."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{PORT}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return connection.recv(4096).decode("latin-1").partition("\r\n")[0]


def test_requests_without_credentials_get_nothing(daemon: Daemon, tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(WEB)
    ok(daemon.client("apply", "-f", str(compose), "-n", "demo"))
    ok(daemon.client("run", "-d", "--name", "quiet", "busybox", "sleep", "600"))

    status, body, headers = _ask("GET", "/ui/stacks")
    assert (status, body) == (303, b""), (status, body)
    assert headers["location"] == "/ui/login?next=/ui/stacks"
    status, body, _ = _ask("GET", "/ui/containers/quiet/stats.json")
    assert status == 401 and b"memory" not in body
    assert _ask("POST", "/ui/stacks/demo/web/scale", "replicas=5")[0] == 401
    assert _ask("POST", "/ui/login", "token=guess")[0] == 401
    assert "101" not in _websocket_status("/ui/containers/quiet/logs", {})

    token = (daemon.root / "ui-token").read_text().strip()
    status, _, headers = _ask("POST", "/ui/login?next=/ui/stacks", f"token={token}")
    assert status == 303 and headers["location"] == "/ui/stacks"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    session = {"cookie": cookie.partition(";")[0]}
    # a logged-in browser's form without (or with a wrong) CSRF token changes nothing
    for form in ("replicas=5", "replicas=5&csrf=0123"):
        status, body, _ = _ask("POST", "/ui/stacks/demo/web/scale", form, session)
        assert status == 403 and b"CSRF" in body, (status, body)
    assert services(daemon) == {"web": 1}
    # a page of another origin cannot open the log WebSocket with the cookie either
    foreign = {**session, "Origin": "http://evil.example"}
    assert "101" not in _websocket_status("/ui/containers/quiet/logs", foreign)
    own = {**session, "Origin": f"http://127.0.0.1:{PORT}"}
    assert " 101 " in _websocket_status("/ui/containers/quiet/logs", own) + " "
    status, body, _ = _ask("GET", "/ui/containers/quiet/stats.json", headers=session)
    assert status == 200 and b"memory_usage" in body


def test_a_dashboard_off_loopback_is_refused_at_start(tmp_path: Path) -> None:
    refusal = refused_start(tmp_path, "--ui-listen", "0.0.0.0:7780")
    assert "not a loopback HOST:PORT" in refusal, refusal
