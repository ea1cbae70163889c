"""System commands: version, info, events, system check."""

from __future__ import annotations

import sys
import time

from carte import API_VERSION, __version__
from carte.cli import compact_json
from carte.cli.commands import Commands, Session, UsageError
from carte.cli.transport import DaemonUnreachable

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    import argparse
    from typing import Any


def register(commands: Commands) -> None:
    commands.add(
        "version",
        run=show_version,
        help="show the client and daemon versions",
        arguments=_format_argument,
    )
    commands.add(
        "info",
        run=show_info,
        help="show the daemon, kernel, cgroups and handlers",
        arguments=_format_argument,
    )
    commands.add(
        "events", run=stream_events, help="stream the daemon's events", arguments=_events_arguments
    )
    system = commands.group("system", help="inspect the host Carte runs on")
    system.add("check", run=check_system, help="check the kernel features Carte needs (no daemon)")
    system.add(
        "prune",
        run=prune_system,
        help="remove stopped containers, unused networks, dangling images and build cache",
        arguments=_prune_arguments,
    )


def _format_argument(parser: argparse.ArgumentParser) -> None:
    """`-f/--format` after the command too, as Docker users type it: table, json or a
    Go template such as '{{json .}}' or '{{.Version}}'."""
    import argparse

    parser.add_argument(
        "-f",
        "--format",
        dest="format",
        default=argparse.SUPPRESS,
        help="table, json or a {{.Field}} template",
    )


_format_argument.format_only = True  # type: ignore[attr-defined]  # see parser.simple_arguments


def _prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="every unused image too")
    parser.add_argument("--volumes", action="store_true", help="unused volumes too")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask to confirm")


def _templated(session: Session, value: Any) -> bool:
    """Print `value` through a `--format` template (True), or leave it to the caller."""
    fmt = session.args.format or "table"
    if fmt in ("table", "json"):
        session.output.format = fmt
        return False
    from carte.cli.output import TemplateError, render_template

    try:
        session.output.line(render_template(fmt, value))
    except TemplateError as error:
        raise UsageError(f"--format: {error}") from None
    return True


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
    if server is not None and _templated(session, {"client": client, "server": server}):
        return 0
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
    if _templated(session, info):
        return 0
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
                out.line(_event_line(compact_json.loads(line)))
            out.stream.flush()
    finally:
        response.close()
    return 0


def _event_line(event: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event.get("time", 0)))
    name, ident = event.pop("type", "?"), event.pop("id", "")
    event.pop("time", None)
    import json

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


_PRUNE_WARNING = """WARNING! This will remove:
  - all stopped containers
  - all networks not used by at least one container
{volumes}  - {images}
  - unused build cache
"""


def prune_system(session: Session) -> int:
    """Docker's `system prune`: asks first unless -f; prints what went and the space freed."""
    args = session.args
    if not args.force:
        images = (
            "all images without at least one container associated to them"
            if args.all
            else "all dangling images"
        )
        volumes = "  - all anonymous volumes not used by at least one container\n"
        sys.stderr.write(
            _PRUNE_WARNING.format(volumes=volumes if args.volumes else "", images=images)
        )
        sys.stderr.write("\nAre you sure you want to continue? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    out = session.output
    reclaimed = 0
    report: dict[str, Any] = {}
    containers = session.command("PruneContainers", filters={})
    reclaimed += containers.get("space_reclaimed", 0)
    report["containers"] = containers["deleted"]
    report["networks"] = session.command("PruneNetworks")["deleted"]
    if args.volumes:
        volumes_pruned = session.command("PruneVolumes")
        reclaimed += volumes_pruned.get("space_reclaimed", 0)
        report["volumes"] = volumes_pruned["deleted"]
    images_pruned = session.command("PruneImages", all=bool(args.all))
    reclaimed += images_pruned.get("bytes_freed", 0)
    report["images"] = images_pruned["deleted"]
    cache = session.command("PruneBuildCache")
    reclaimed += cache.get("bytes_freed", 0)
    report["build_cache_records"] = cache.get("records", 0)
    report["space_reclaimed"] = reclaimed
    if out.json:
        out.data(report)
        return 0
    for title, key in (
        ("Containers", "containers"),
        ("Networks", "networks"),
        ("Volumes", "volumes"),
    ):
        if report.get(key):
            out.line(f"Deleted {title}:")
            for name in report[key]:
                out.line(name)
            out.line("")
    if report["images"]:
        out.line("Deleted Images:")
        for image in report["images"]:
            out.line(
                f"untagged: {image['untagged']}"
                if image.get("untagged")
                else f"deleted: {image['deleted']}"
            )
        out.line("")
    if report["build_cache_records"]:
        out.line(f"Deleted build cache objects: {report['build_cache_records']}")
    out.line(f"Total reclaimed space: {_size(reclaimed)}")
    return 0


def _size(value: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.4g}{unit}" if unit != "B" else f"{value}B"
        value //= 1000
    return f"{value}GB"
