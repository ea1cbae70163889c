"""`carte top` and `carte stats`: what runs in a container and what it uses.

`stats` prints CONTAINER ID, NAME, CPU %, MEM USAGE / LIMIT, MEM %, PIDS like Docker; without
--no-stream it redraws the table about once a second until Ctrl-C (exit 0 then, as Docker).
"""

from __future__ import annotations

import argparse
import sys
import time

from carte.cli.commands import Commands, Session
from carte.cli.transport import ApiError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_REFRESH_SECONDS = 1.0
_CLEAR = "\033[2J\033[H"


def register(commands: Commands) -> None:
    commands.add("top", run=top, help="show the processes of a container", arguments=_top)
    commands.add("stats", run=stats, help="show containers' resource usage", arguments=_stats)


def _top(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container")


def _stats(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-stream", action="store_true", help="print one reading and exit")
    parser.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    parser.add_argument("containers", nargs="*", metavar="CONTAINER")


def top(session: Session) -> int:
    try:
        result = session.command("TopContainer", ref=session.args.container)
    except ApiError as error:
        print(f"carte: {error.message}", file=sys.stderr)
        return 1
    if session.output.json:
        session.output.data(result)
    else:
        session.output.table(result["titles"], result["processes"])
    return 0


def stats(session: Session) -> int:
    args = session.args
    try:
        refs = list(args.containers) or [
            row["id"] for row in session.command("ListContainers", all=bool(args.all))
        ]
    except ApiError as error:
        print(f"carte: {error.message}", file=sys.stderr)
        return 1
    try:
        while True:
            readings, failed = _readings(session, refs, quiet=not args.containers)
            if not args.no_stream and not session.output.json:
                sys.stdout.write(_CLEAR)
            _print(session, readings)
            sys.stdout.flush()
            if args.no_stream:
                return 1 if failed else 0
            time.sleep(_REFRESH_SECONDS)
    except KeyboardInterrupt:
        return 0


def _readings(session: Session, refs: list[str], *, quiet: bool) -> tuple[list[Any], bool]:
    """A reading per container; errors printed (unless `quiet`, when containers listed by
    the daemon may stop meanwhile), and whether any failed."""
    readings = []
    failed = False
    for ref in refs:
        try:
            readings.append(session.command("GetContainerStats", ref=ref))
        except ApiError as error:
            failed = True
            if not quiet:
                print(f"carte: {error.message}", file=sys.stderr)
    return readings, failed and not quiet


def _print(session: Session, readings: list[Any]) -> None:
    if session.output.json:
        session.output.data(readings)
        return
    rows = []
    for reading in readings:
        usage, limit = reading["memory_usage"], reading["memory_limit"]
        percent = usage / limit * 100 if limit else 0.0
        rows.append(
            [
                reading["id"][:12],
                reading["name"],
                f"{reading['cpu_percent']:.2f}%",
                f"{_size(usage)} / {_size(limit)}",
                f"{percent:.2f}%",
                str(reading["pids"]),
            ]
        )
    headers = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]
    session.output.table(headers, rows)


def _size(value: int) -> str:
    """Docker's binary units: 1.5MiB, 3.84GiB."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.4g}{unit}" if unit != "B" else f"{int(amount)}B"
        amount /= 1024
    return f"{value}B"
