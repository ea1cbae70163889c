"""The HTTP API through the real unix socket of a real `carte daemon` subprocess."""

from __future__ import annotations

import grp
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Any

from support.daemon import Daemon, DaemonFactory

from carte.api.host import read_cgroup_layout


def test_ping_version_and_info(daemons: DaemonFactory) -> None:
    daemon = daemons()
    ping = daemon.request("GET", "/_ping")
    assert (ping.status, ping.body) == (200, b"OK")

    version = daemon.request("GET", "/v1/version")
    assert version.status == 200 and version.content_type.startswith("application/json")
    assert version.json()["api_version"] == "1"
    assert version.json()["kernel"] == os.uname().release

    info = daemon.request("GET", "/v1/info").json()
    assert info["root"] == str(daemon.root)
    assert info["run_root"] == str(daemon.run_root)
    assert info["socket"] == str(daemon.socket)
    assert info["pid"] == daemon.process.pid  # type: ignore[union-attr]
    assert info["cgroup"]["mode"] == read_cgroup_layout().mode
    handlers = {h["name"]: h for h in info["handlers"]}
    assert handlers["api"]["state"] == "running"
    assert handlers["webhook"]["state"] == "skipped"
    assert "no url configured" in handlers["webhook"]["reason"]
    assert handlers["webhook"]["plugin"] is True


def test_disabled_handler_is_listed_with_reason(daemons: DaemonFactory) -> None:
    daemon = daemons(config="handlers:\n  disabled: [webhook]\n")
    handlers = {h["name"]: h for h in daemon.request("GET", "/v1/info").json()["handlers"]}
    assert handlers["webhook"]["state"] == "disabled"
    assert "carte.yaml" in handlers["webhook"]["reason"]


def test_errors_are_json_with_fitting_status(daemons: DaemonFactory) -> None:
    daemon = daemons()
    missing = daemon.request("GET", "/v1/nothing-here")
    assert missing.status == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "/v1/nothing-here" in missing.json()["error"]["message"]

    wrong_method = daemon.request("DELETE", "/v1/info")
    assert wrong_method.status == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"

    unknown_command = daemon.request("POST", "/v1/commands/NoSuchCommand", {})
    assert unknown_command.status == 404
    assert "NoSuchCommand" in unknown_command.json()["error"]["message"]

    not_json = daemon.request("POST", "/v1/commands/Ping", raw=b"{not json")
    assert not_json.status == 400
    assert not_json.json()["error"]["code"] == "invalid_argument"

    bad_since = daemon.request("GET", "/v1/events?since=yesterday")
    assert bad_since.status == 400
    assert "since" in bad_since.json()["error"]["message"]

    # A command round trip through the bus.
    ping = daemon.request("POST", "/v1/commands/Ping", {})
    assert (ping.status, ping.json()) == (200, {"result": "pong"})


def test_openapi_describes_routes_from_the_structs(daemons: DaemonFactory) -> None:
    document = daemons().request("GET", "/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in ("/_ping", "/v1/version", "/v1/info", "/v1/events", "/v1/commands/Ping"):
        assert path in document["paths"]
    schemas = document["components"]["schemas"]
    assert set(schemas["Info"]["required"]) >= {"kernel", "cgroup", "root", "run_root"}
    assert "handlers" in schemas["Info"]["properties"]
    assert "DaemonStarted" in schemas
    # Routes other handlers' modules add are listed too, with OpenAPI path templates.
    assert not any("<" in path or path.startswith("/static") for path in document["paths"])
    templated = [path for path in document["paths"] if "{" in path]
    for path in templated:
        for operation in document["paths"][path].values():
            assert operation["parameters"][0]["in"] == "path"


def test_events_since_replays_the_journal_with_a_type_filter(daemons: DaemonFactory) -> None:
    daemon = daemons()
    stream = daemon.stream("/v1/events?since=0&type=daemon.started")
    first = next(stream)
    assert first["type"] == "DaemonStarted"
    assert first["pid"] == daemon.process.pid  # type: ignore[union-attr]
    stream.close()

    by_prefix = daemon.stream("/v1/events?since=0&type=handler")
    seen = next(by_prefix)
    assert seen["type"].startswith("Handler")
    by_prefix.close()


def reload_with(daemon: Daemon, config: str, event_type: str) -> dict[str, Any]:
    """Write `config` as the daemon's carte.yaml and SIGHUP it; the first event of
    `event_type` (a name or a topic) published from then on."""
    # since=now: whether the fact lands before or after the subscription, it is sent once.
    stream = daemon.stream(f"/v1/events?type={event_type}&since={time.time()}")
    daemon.config_path.write_text(config)
    daemon.send_signal(signal.SIGHUP)
    fact: dict[str, Any] = next(stream)
    stream.close()
    return fact


def test_events_stream_live_facts(daemons: DaemonFactory) -> None:
    """A SIGHUP publishes ConfigReloaded; a live subscriber with a filter receives it."""
    daemon = daemons()
    fact = reload_with(daemon, "daemon:\n  log_level: debug\n", "ConfigReloaded")
    assert fact["type"] == "ConfigReloaded"
    assert fact["applied"] == ["daemon.log_level"]


def test_sighup_reload_logs_what_needs_a_restart(daemons: DaemonFactory) -> None:
    daemon = daemons()
    config = "daemon:\n  log_level: warning\nbus:\n  subscriber_buffer: 7\n"
    fact = reload_with(daemon, config, "daemon.config_reloaded")
    assert fact["applied"] == ["daemon.log_level"]
    assert fact["not_reloadable"] == ["bus.subscriber_buffer"]
    assert "key=bus.subscriber_buffer" in daemon.log()

    daemon.config_path.write_text("daemon:\n  lgo_level: debug\n")
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reload failed" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 'unknown key \\"lgo_level\\"' in daemon.log()
    assert daemon.request("GET", "/_ping").body == b"OK"


def test_socket_mode_and_group(daemons: DaemonFactory) -> None:
    daemon = daemons()
    status = os.stat(daemon.socket)
    assert stat.S_ISSOCK(status.st_mode)
    assert stat.S_IMODE(status.st_mode) == 0o660
    try:
        carte_gid = grp.getgrnam("carte").gr_gid
    except KeyError:
        carte_gid = None
    if carte_gid is not None:
        assert status.st_gid == carte_gid


def test_second_daemon_on_the_same_root_is_refused(daemons: DaemonFactory) -> None:
    first = daemons()
    second = Daemon(first.workdir, config="")
    second.socket = first.workdir / "other.sock"
    result = subprocess.run(second.argv(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"carte daemon: root {first.root} is in use by pid {first.process.pid}; "  # type: ignore[union-attr]
        "stop that daemon or use another --root"
    ]
    assert first.request("GET", "/_ping").body == b"OK"


def test_daemons_with_different_roots_run_side_by_side(daemons: DaemonFactory) -> None:
    one, two = daemons(), daemons()
    assert one.request("GET", "/v1/info").json()["root"] == str(one.root)
    assert two.request("GET", "/v1/info").json()["root"] == str(two.root)


def test_sigterm_stops_gracefully_within_the_timeout(daemons: DaemonFactory) -> None:
    daemon = daemons(config="daemon:\n  shutdown_timeout: 5\n")
    stream = daemon.stream("/v1/events")  # an open stream must not hold the shutdown up
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    stream.close()
    assert not daemon.socket.exists()
    assert not (daemon.run_root / "carte.pid").exists()
    assert "daemon stopped" in daemon.log()
    assert "Traceback" not in daemon.log()
    # The root is free again: a new daemon on it starts.
    again = daemons(workdir=daemon.workdir)
    assert again.request("GET", "/_ping").body == b"OK"


def test_sigint_also_stops_gracefully(daemons: DaemonFactory) -> None:
    daemon = daemons()
    assert daemon.stop(signal.SIGINT) == 0


def test_bad_config_is_one_line_naming_file_and_line(daemons: DaemonFactory) -> None:
    daemon = daemons(config="daemon:\n  root: /tmp/x\n  handlrs: []\n", start=False)
    result = subprocess.run(daemon.argv(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"carte daemon: {daemon.config_path}:3:")
    assert "handlrs" in lines[0]


def test_bad_daemon_flag_is_a_usage_error(daemons: DaemonFactory) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "carte", "daemon", "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr


def test_root_that_cannot_be_created_is_one_line(daemons: DaemonFactory) -> None:
    daemon = daemons(start=False)
    blocker = daemon.workdir / "file"
    blocker.write_text("")
    argv = daemon.argv()
    argv[argv.index("--root") + 1] = str(blocker / "root")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(blocker / "root") in result.stderr or str(blocker) in result.stderr
