"""Plugins found through real `carte.plugins` entry points of installed packages."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.daemon import DaemonFactory, make_workdir


def test_sample_plugin_is_discovered_and_answers_commands(plugin_daemons: DaemonFactory) -> None:
    daemon = plugin_daemons()
    handlers = {h["name"]: h for h in daemon.request("GET", "/v1/info").json()["handlers"]}
    assert handlers["sample"] == {
        "name": "sample",
        "state": "running",
        "reason": "",
        "plugin": True,
    }
    put = daemon.command_("PutKey", key="greeting", value="hello")
    assert put.status == 200, put.body
    assert isinstance(put.json()["result"], int)
    assert daemon.command_("GetKey", key="greeting").json() == {"result": "hello"}

    missing = daemon.command_("GetKey", key="nope")
    assert missing.status == 404
    assert missing.json()["error"] == {
        "code": "not_found",
        "message": 'sample key "nope" not found; put it first (PutKey)',
    }
    # The plugin's commands are part of the generated API description.
    paths = daemon.request("GET", "/v1/openapi.json").json()["paths"]
    assert "/v1/commands/PutKey" in paths


def test_malformed_command_body_is_400_naming_the_field(plugin_daemons: DaemonFactory) -> None:
    daemon = plugin_daemons()
    wrong_type = daemon.command_("PutKey", key=5, value="x")
    assert wrong_type.status == 400
    assert "$.key" in wrong_type.json()["error"]["message"]
    missing = daemon.command_("PutKey", key="k")
    assert missing.status == 400
    assert "value" in missing.json()["error"]["message"]


def test_plugin_facts_reach_the_event_stream(plugin_daemons: DaemonFactory) -> None:
    daemon = plugin_daemons()
    before = daemon.command_("PutKey", key="a", value="1").json()["result"]
    stream = daemon.stream("/v1/events?since=0&type=sample")
    fact = next(stream)
    stream.close()
    assert (fact["type"], fact["id"], fact["revision"]) == ("KeyPut", "a", before)


def test_disabled_plugin_does_not_run(plugin_daemons: DaemonFactory) -> None:
    daemon = plugin_daemons(config="handlers:\n  disabled: [sample]\n")
    handlers = {h["name"]: h for h in daemon.request("GET", "/v1/info").json()["handlers"]}
    assert handlers["sample"]["state"] == "disabled"
    refused = daemon.command_("PutKey", key="k", value="v")
    assert refused.status == 503
    assert "PutKey" in refused.json()["error"]["message"]


def test_a_plugin_that_fails_to_import_is_one_line(daemons: DaemonFactory) -> None:
    """A hand-written dist-info is a real installed distribution for importlib.metadata."""
    site = make_workdir()
    daemons.workdirs.append(site)
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[carte.plugins]\nbroken = no_such_module:Handler\n")
    daemons.extra_path.append(site)
    daemon = daemons(start=False)
    result = subprocess.run(daemon.argv(), capture_output=True, text=True, env=daemon.env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith('carte daemon: plugin "broken" (no_such_module:Handler) failed')


def test_committed_commands_survive_sigkill(plugin_daemons: DaemonFactory) -> None:
    """Stream PutKey commands, SIGKILL the daemon mid-stream, restart: every acked key is there."""
    workdir = make_workdir()
    plugin_daemons.workdirs.append(workdir)
    daemon = plugin_daemons(workdir=workdir)
    acknowledged: dict[str, int] = {}
    stop = threading.Event()

    def writer() -> None:
        number = 0
        while not stop.is_set():
            key = f"k{number}"
            try:
                reply = daemon.command_("PutKey", key=key, value=str(number))
            except OSError:
                return  # the daemon died mid-request: that command was never acknowledged
            if reply.status == 200:
                acknowledged[key] = number
            number += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acknowledged) < 40 and thread.is_alive():
            thread.join(0.01)
        daemon.stop(signal.SIGKILL)
    finally:
        stop.set()
        thread.join()
    assert len(acknowledged) >= 40

    with sqlite3.connect(daemon.root / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()

    again = plugin_daemons(workdir=workdir)
    for key, number in acknowledged.items():
        reply = again.command_("GetKey", key=key)
        assert reply.json() == {"result": str(number)}, key
    count = again.command_("CountKeys").json()["result"]
    assert count >= len(acknowledged)


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    arrived: threading.Condition

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.arrived:
            self.received.append(json.loads(body))
            self.arrived.notify_all()
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_webhook_posts_selected_facts_to_a_real_server(plugin_daemons: DaemonFactory) -> None:
    received: list[dict[str, Any]] = []
    arrived = threading.Condition()
    handler = type("Hook", (_Hook,), {"received": received, "arrived": arrived})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        config = (
            "handlers:\n  options:\n    webhook:\n"
            f"      url: {url}\n      events: [DaemonStarted, sample]\n"
        )
        daemon = plugin_daemons(config=config)
        handlers = {h["name"]: h for h in daemon.request("GET", "/v1/info").json()["handlers"]}
        assert handlers["webhook"]["state"] == "running"
        daemon.command_("PutKey", key="hooked", value="yes")
        with arrived:
            assert arrived.wait_for(lambda: len(received) >= 2, timeout=15), received
        events = [(r["event"], r["fact"].get("id")) for r in received]
        assert events == [("DaemonStarted", "daemon"), ("KeyPut", "hooked")]
        assert received[0]["topic"] == "daemon.started"
        assert received[0]["fact"]["pid"] == daemon.process.pid  # type: ignore[union-attr]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_webhook_with_bad_options_skips_itself_and_says_why(daemons: DaemonFactory) -> None:
    daemon = daemons(config="handlers:\n  options:\n    webhook:\n      url: ftp://x\n")
    handlers = {h["name"]: h for h in daemon.request("GET", "/v1/info").json()["handlers"]}
    assert handlers["webhook"]["state"] == "skipped"
    assert 'url "ftp://x" is not http(s)' in handlers["webhook"]["reason"]
