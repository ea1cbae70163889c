"""`carte top` and `carte stats`: what runs in a container and what it uses.

`stats` prints CONTAINER ID, NAME, CPU %, MEM USAGE / LIMIT, MEM %, NET I/O, BLOCK I/O, PIDS
like Docker (the I/O columns read from this host's kernel, `--` for a remote daemon); without
--no-stream it redraws the table about once a second until Ctrl-C (exit 0 then, as Docker).
"""

from __future__ import annotations

import argparse
import sys
import time

from carte.cli.commands import Commands, Session, add_template_format, templated
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
    parser.add_argument("--no-trunc", action="store_true", help="full container IDs")
    add_template_format(parser, "stats_format")
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
            if _print(session, readings):
                return 1
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
            reading = session.command("GetContainerStats", ref=ref)
            pid = session.command("InspectContainer", ref=ref)["state"]["pid"]
            readings.append({**reading, **_host_io(session, int(pid), reading["id"])})
        except ApiError as error:
            failed = True
            if not quiet:
                print(f"carte: {error.message}", file=sys.stderr)
    return readings, failed and not quiet


_STATS_HEADERS = {
    "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
}  # fmt: skip


def _print(session: Session, readings: list[Any]) -> int:
    """The readings as JSON, through a --format template, or as Docker's table; exit code."""
    fmt = session.args.stats_format
    id_length = None if session.args.no_trunc else 12

    def fields(reading: dict[str, Any]) -> dict[str, Any]:
        return _stats_fields(reading, id_length)

    if fmt not in (None, "table", "json"):
        headers = {**_STATS_HEADERS, "Container": "CONTAINER"}
        return templated(session, fmt, readings, fields, headers)
    if session.output.json or fmt == "json":
        session.output.data(readings)
    else:
        rows = [list(fields(reading).values())[1:] for reading in readings]
        session.output.table(list(_STATS_HEADERS.values()), rows)
    return 0


def _stats_fields(reading: dict[str, Any], id_length: int | None) -> dict[str, Any]:
    """A reading under Docker's `stats --format` names (the table's columns, in order); the
    ID cut to `id_length` characters (None: whole, --no-trunc)."""
    usage, limit = reading["memory_usage"], reading["memory_limit"]
    return {
        "Container": reading["name"],
        "ID": reading["id"][:id_length],
        "Name": reading["name"],
        "CPUPerc": f"{reading['cpu_percent']:.2f}%",
        "MemUsage": f"{_size(usage)} / {_size(limit)}",
        "MemPerc": f"{usage / limit * 100 if limit else 0.0:.2f}%",
        "NetIO": _pair(reading.get("net_rx_bytes"), reading.get("net_tx_bytes")),
        "BlockIO": _pair(reading.get("block_read_bytes"), reading.get("block_write_bytes")),
        "PIDs": str(reading["pids"]),
    }


def _size(value: int) -> str:
    """Docker's binary units: 1.5MiB, 3.84GiB."""
    return _in_units(value, 1024, ("B", "KiB", "MiB", "GiB", "TiB"), ".4g")


def _pair(first: int | None, second: int | None) -> str:
    """Docker's `1.2kB / 648B` (decimal units); `--` when unknown."""
    if first is None or second is None:
        return "--"
    return f"{_decimal(first)} / {_decimal(second)}"


def _decimal(value: int) -> str:
    return _in_units(value, 1000, ("B", "kB", "MB", "GB", "TB"), ".3g")


def _in_units(value: int, step: int, units: tuple[str, ...], digits: str) -> str:
    """`value` bytes in the largest of `units` (each `step` times the one before) it reaches,
    with `digits` significant digits; whole bytes below the first step."""
    amount = float(value)
    for unit in units:
        if amount < step or unit == units[-1]:
            return f"{amount:{digits}}{unit}" if unit != "B" else f"{int(amount)}B"
        amount /= step
    return f"{value}B"


def _host_io(session: Session, pid: int, container_id: str) -> dict[str, int]:
    """Network bytes (every interface but lo) and block bytes (the cgroup's) of the container
    whose init is `pid`, read from the kernel when the daemon is on this host (a unix
    socket); empty otherwise or when unreadable, shown as `--`."""
    from carte.cli.transport import TlsClient

    if not pid or isinstance(session.client, TlsClient):
        return {}
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/net/dev", encoding="ascii") as dev:
            rx = tx = 0
            for line in dev.readlines()[2:]:
                name, _, numbers = line.partition(":")
                fields = numbers.split()
                if name.strip() != "lo" and len(fields) >= 9:
                    rx, tx = rx + int(fields[0]), tx + int(fields[8])
        found.update(net_rx_bytes=rx, net_tx_bytes=tx)
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as cgroups:
            lines = [line.rstrip("\n").split(":", 2) for line in cgroups]
        found.update(_block_bytes(lines, container_id))
    except (OSError, ValueError):
        pass
    return found


def _block_bytes(cgroups: list[list[str]], container_id: str) -> dict[str, int]:
    """Bytes read and written: io.stat on cgroup v2, blkio's service bytes on v1 (Carte
    makes no blkio cgroup there, so none unless something else put the container in one)."""
    read = written = 0
    for _, controllers, path in (line for line in cgroups if len(line) == 3):
        if container_id not in path:
            continue  # not a cgroup of its own (the root's, the daemon's): not its numbers
        if controllers == "":
            with open(f"/sys/fs/cgroup{path}/io.stat", encoding="ascii") as stat:
                for line in stat:
                    values = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
                    read += int(values.get("rbytes", 0))
                    written += int(values.get("wbytes", 0))
            return {"block_read_bytes": read, "block_write_bytes": written}
        if "blkio" in controllers.split(","):
            base = f"/sys/fs/cgroup/blkio{path}"
            with open(f"{base}/blkio.throttle.io_service_bytes", encoding="ascii") as stat:
                for line in stat:
                    fields = line.split()
                    if len(fields) == 3 and fields[1] == "Read":
                        read += int(fields[2])
                    elif len(fields) == 3 and fields[1] == "Write":
                        written += int(fields[2])
            return {"block_read_bytes": read, "block_write_bytes": written}
    return {}
