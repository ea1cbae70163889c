"""System commands: version, info, events, system check."""

from __future__ import annotations

import json
import sys
import time

from carte import API_VERSION, __version__
from carte.cli.commands import Commands, Session, UsageError
from carte.cli.transport import DaemonUnreachable

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    import argparse
    from typing import Any


def register(commands: Commands) -> None:
    commands.add("version", run=show_version, help="show the client and daemon versions")
    commands.add("info", run=show_info, help="show the daemon, kernel, cgroups and handlers")
    commands.add(
        "events", run=stream_events, help="stream the daemon's events", arguments=_events_arguments
    )
    system = commands.group("system", help="inspect the host Carte runs on")
    system.add("check", run=check_system, help="check the kernel features Carte needs (no daemon)")


def _events_arguments(events: argparse.ArgumentParser) -> None:
    events.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="type=NAME",
        help="only events whose name, topic or topic prefix is NAME; repeatable",
    )
    events.add_argument(
        "--since",
        help="replay journaled events since a time: 10m, 30s, 2h, Unix seconds or ISO 8601",
    )


def show_version(session: Session) -> int:
    client = {
        "version": __version__,
        "api_version": API_VERSION,
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
    }
    try:
        server: dict[str, Any] | None = session.client.get_json("/v1/version")
        unreachable = ""
    except DaemonUnreachable as error:
        server, unreachable = None, str(error)
    out = session.output
    if out.json:
        out.data({"client": client, "server": server})
    else:
        out.line("Client:")
        out.fields([(f"  {k}", v) for k, v in client.items()])
        if server is not None:
            out.line("Server:")
            out.fields([(f"  {k}", v) for k, v in server.items()])
    if server is None:
        print(unreachable, file=sys.stderr)
        return 1
    return 0


def show_info(session: Session) -> int:
    info = session.client.get_json("/v1/info")
    out = session.output
    if out.json:
        out.data(info)
        return 0
    cgroup = info["cgroup"]
    out.fields(
        [
            ("Version", info["version"]),
            ("Daemon pid", info["pid"]),
            ("Kernel", info["kernel"]),
            ("Cgroups", cgroup["mode"]),
            ("Storage root", info["root"]),
            ("Run root", info["run_root"]),
            ("Socket", info["socket"]),
        ]
    )
    for mount in cgroup["mounts"]:
        controllers = ",".join(mount["controllers"])
        out.line(f"  cgroup v{mount['version']} {mount['path']} {controllers}".rstrip())
    out.line("Handlers:")
    out.table(
        ["name", "state", "reason"],
        [
            [h["name"] + (" (plugin)" if h.get("plugin") else ""), h["state"], h["reason"]]
            for h in info["handlers"]
        ],
    )
    return 0


def stream_events(session: Session) -> int:
    query: list[tuple[str, str]] = []
    for value in session.args.filter:
        key, sep, name = value.partition("=")
        if key != "type" or not sep or not name:
            raise UsageError(f'filter "{value}" is not type=NAME; use e.g. --filter type=container')
        query.append(("type", name))
    if session.args.since:
        query.append(("since", repr(parse_since(session.args.since))))
    from urllib.parse import urlencode

    path = "/v1/events" + (f"?{urlencode(query)}" if query else "")
    response = session.client.open("GET", path)
    out = session.output
    try:
        for line in response.lines():
            if out.json:
                out.line(line.decode())
            else:
                out.line(_event_line(json.loads(line)))
            out.stream.flush()
    finally:
        response.close()
    return 0


def _event_line(event: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event.get("time", 0)))
    name, ident = event.pop("type", "?"), event.pop("id", "")
    event.pop("time", None)
    rest = " ".join(f"{k}={json.dumps(v)}" for k, v in event.items())
    return f"{when} {name} {ident} {rest}".replace("  ", " ").rstrip()


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(value: str) -> float:
    """A duration ago (10m), Unix seconds, or an ISO 8601 time -> Unix seconds.

    Raises UsageError naming the value.
    """
    text = value.strip()
    if text and text[-1] in _UNITS:
        try:
            return time.time() - float(text[:-1]) * _UNITS[text[-1]]
        except ValueError:
            pass
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(
            f'--since "{value}" is not a time; use e.g. 10m, 2h, 1700000000 or 2026-01-01T12:00'
        ) from None


def check_system(session: Session) -> int:
    from carte.cli.system_check import run_checks

    checks = run_checks()
    out = session.output
    if out.json:
        out.data([c.__dict__ for c in checks])
    else:
        out.table(
            ["feature", "status", "detail", "fix"],
            [
                [
                    c.feature,
                    "ok" if c.ok else ("MISSING" if c.required else "missing (optional)"),
                    c.detail,
                    "" if c.ok else c.fix,
                ]
                for c in checks
            ],
        )
    missing = [c.feature for c in checks if c.required and not c.ok]
    if missing:
        print(f"carte: required features missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0
