"""Container commands: create, start, run, ps, stop, kill, restart, rm, pause, unpause, logs,
wait, inspect, rename, update, container prune.

Exit codes follow Docker: `run`/`create` answer 125 for a usage or daemon error, 126 when the
command cannot be invoked, 127 when it is not found, and otherwise `run` exits with the
container's own code.
"""

from __future__ import annotations

import sys
import time

from carte.cli import compact_json
from carte.cli.commands import (
    Commands,
    Session,
    add_inspect_format,
    add_log_window,
    each,
    fail,
    show_inspected,
    templated,
    warn,
)
from carte.cli.output import docker_container, docker_image
from carte.cli.run_options import (
    RunOptionError,
    add_run_arguments,
    claim_cidfile,
    container_config,
    fill_cidfile,
    parse_size,
)
from carte.cli.transport import ApiError

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    import argparse  # imported by carte.cli.parser only when a parser is built
    from typing import Any

DAEMON_ERROR = 125


def register(commands: Commands) -> None:
    commands.add("create", run=create, help="create a container", arguments=_create_arguments)
    commands.add("run", run=run, help="create and start a container", arguments=_run_arguments)
    commands.add("start", run=start, help="start containers", arguments=_refs(_start_flags))
    commands.add("ps", run=ps, help="list containers", arguments=_ps_arguments)
    commands.add("stop", run=stop, help="stop containers", arguments=_refs(_stop_flags))
    commands.add("kill", run=kill, help="send a signal to containers", arguments=_refs(_signal))
    commands.add("restart", run=restart, help="restart containers", arguments=_refs(_stop_flags))
    commands.add("rm", run=remove, help="remove containers", arguments=_refs(_rm_flags))
    commands.add("pause", run=pause, help="pause every process in containers", arguments=_refs())
    commands.add("unpause", run=unpause, help="unpause containers", arguments=_refs())
    commands.add("logs", run=logs, help="print a container's logs", arguments=_logs_arguments)
    commands.add("wait", run=wait, help="wait for containers to stop", arguments=_refs())
    commands.add(
        "inspect", run=inspect, help="show objects in detail", arguments=_refs(_inspect_flags)
    )
    commands.add("port", run=port, help="list a container's published ports", arguments=_port)
    commands.add("rename", run=rename, help="rename a container", arguments=_rename_arguments)
    commands.add(
        "update", run=update, help="change a container's limits", arguments=_update_arguments
    )
    container = commands.group("container", help="manage containers")
    container.add(
        "prune", run=prune, help="remove all stopped containers", arguments=_prune_arguments
    )
    container.alias("ls", commands, "ps")
    container.add(
        "inspect", run=inspect, help="show containers in detail", arguments=_refs(_container_fmt)
    )


# --- arguments ----------------------------------------------------------------------------


def _hostname_friendly(parser: argparse.ArgumentParser) -> None:
    """Docker's -h is --hostname; help stays on --help."""
    parser.conflict_handler = "resolve"
    parser._optionals.conflict_handler = "resolve"


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    _hostname_friendly(parser)
    parser.add_argument("--rm", action="store_true", help="remove the container when it exits")
    parser.add_argument(
        "--pull",
        choices=("missing", "always", "never"),
        default="missing",
        help="pull the image first: when it is missing (default), always, or never",
    )
    add_run_arguments(parser)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _create_arguments(parser)
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background")


def _refs(
    extra: Any = None,
) -> Any:
    def arguments(parser: argparse.ArgumentParser) -> None:
        if extra is not None:
            extra(parser)
        parser.add_argument("containers", nargs="+", metavar="CONTAINER")

    return arguments


def _start_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--attach", action="store_true", help="print the output, wait")
    parser.add_argument("-i", "--interactive", action="store_true", help="attach its input")


def _stop_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--time", "--timeout", type=int, help="seconds before SIGKILL")
    parser.add_argument("-s", "--signal", default="", help="instead of the stop signal")


def _signal(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--signal", default="KILL", help="signal to send (default KILL)")


def _fmt(parser: argparse.ArgumentParser) -> None:
    add_inspect_format(parser, "{{.State.ExitCode}}")


def _container_fmt(parser: argparse.ArgumentParser) -> None:
    _fmt(parser)
    parser.set_defaults(type="container")


def _inspect_flags(parser: argparse.ArgumentParser) -> None:
    _fmt(parser)
    parser.add_argument(
        "--type", choices=[kind[0] for kind in _INSPECTED], help="only this kind of object"
    )


def _port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container")
    parser.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")


def _rm_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="kill a running one first")
    parser.add_argument("-v", "--volumes", action="store_true", help="remove anonymous volumes")


def _ps_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="show stopped ones too")
    parser.add_argument("-q", "--quiet", action="store_true", help="only ids")
    parser.add_argument(
        "-f", "--filter", action="append", default=[], help="KEY=VALUE (label, name, status...)"
    )
    parser.add_argument("--no-trunc", action="store_true", help="full ids and commands")
    parser.add_argument("-n", "--last", type=int, default=-1, help="the N last created (any state)")
    parser.add_argument("-l", "--latest", action="store_true", help="the last created (any state)")
    parser.add_argument("--format", dest="ps_format", help="json, table, or a {{.Field}} template")


def _logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true", help="follow until it stops")
    parser.add_argument("-n", "--tail", default="all", help="lines from the end (default all)")
    add_log_window(parser)
    parser.add_argument("container")


def _rename_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container")
    parser.add_argument("new_name")


def _update_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--memory", help="memory limit (e.g. 512m)")
    parser.add_argument("--memory-swap", help="memory plus swap limit; -1 unlimited")
    parser.add_argument("--cpus", help="number of CPUs")
    parser.add_argument("-c", "--cpu-shares", help="CPU shares")
    parser.add_argument("--cpuset-cpus", help="CPUs allowed")
    parser.add_argument("--pids-limit", help="maximum number of processes")
    parser.add_argument("--restart", help="restart policy")
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def _prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="do not ask (always true)")
    parser.add_argument("--filter", action="append", default=[], help="label=..., until=...")


# --- helpers ------------------------------------------------------------------------------


def _error(message: str) -> None:
    fail(message)


def _each(session: Session, action: Any) -> int:
    """Run `action(ref)` for each container argument; Docker prints each ref done and keeps
    going after an error, exiting 1 if any failed."""
    return each(session.args.containers, action)


def _filters(values: list[str], flag: str = "--filter") -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise RunOptionError(f'invalid {flag} "{value}": use KEY=VALUE, e.g. label=app=web')
        filters.setdefault(key, []).append(val)
    return filters


def _start_code(error: ApiError) -> int:
    """126/127 when the daemon says the command cannot be invoked or found, else 125."""
    for code in (126, 127):
        if f"[exit {code}]" in error.message:
            return code
    return DAEMON_ERROR


def _strip_exit_tag(message: str) -> str:
    for code in (126, 127):
        message = message.replace(f" [exit {code}]", "")
    return message


# --- create / start / run -------------------------------------------------------------------


def _create(session: Session) -> tuple[str, int]:
    """Create from the parsed flags; (id, 0) or ("", exit code) after printing the error."""
    cidfile = session.args.cidfile
    try:
        config = container_config(session.args)
        claim_cidfile(cidfile)
    except RunOptionError as error:
        _error(str(error))
        return "", DAEMON_ERROR
    container_id, code = _create_pulling(session, config)
    fill_cidfile(cidfile, container_id)
    return container_id, code


def _create_pulling(session: Session, config: dict[str, Any]) -> tuple[str, int]:
    """CreateContainer, pulling the image first as --pull says (quietly with -q)."""
    policy = getattr(session.args, "pull", "missing")
    quiet = session.args.quiet
    if policy == "always" and not _pull(session, config["image"], quiet=quiet):
        return "", DAEMON_ERROR
    try:
        created = session.command("CreateContainer", config=config)
    except ApiError as error:
        if policy != "missing" or not _missing_image(error.message):
            _error(error.message)
            return "", DAEMON_ERROR
        if not quiet:
            print(f"Unable to find image '{config['image']}' locally", file=sys.stderr)
        if not _pull(session, config["image"], quiet=quiet):
            return "", DAEMON_ERROR
        try:
            created = session.command("CreateContainer", config=config)
        except ApiError as again:
            _error(again.message)
            return "", DAEMON_ERROR
    warn(created)
    return str(created["id"]), 0


def _missing_image(message: str) -> bool:
    import re  # only here: `ps` and `inspect` start without it

    pattern = r'image "[^"]+" not found locally|Unable to find image "[^"]+" locally'
    return re.search(pattern, message) is not None


def _pull(session: Session, image: str, *, quiet: bool) -> bool:
    """Pull `image` as `carte pull` does (progress on stderr unless `quiet`); False after
    printing why not."""
    from carte.cli.commands.registry import registry_host, stored_login, stream_transfer

    body = {"reference": image, "login": stored_login(registry_host(image)), "insecure": False}
    try:
        result = stream_transfer(session, "/v1/images/pull", body, quiet=quiet)
    except ApiError as error:
        _error(error.message)
        return False
    if not quiet:
        print(f"Digest: {result['manifest_digest']}", file=sys.stderr)
    return True


def _image_at_hand(session: Session) -> bool:
    """`run -i/-t`'s --pull before it attaches, as `_create` does for the others: pull the
    image when it is missing (or always); False after printing why it could not be had."""
    try:
        image = container_config(session.args)["image"]
    except RunOptionError:
        return True  # run_interactive reports the bad flag
    policy = getattr(session.args, "pull", "missing")
    if policy == "missing":
        try:
            session.command("InspectImage", ref=image)
            return True
        except ApiError as error:
            if error.status != 404:
                return True  # the create that follows says what is wrong
        if not session.args.quiet:
            print(f"Unable to find image '{image}' locally", file=sys.stderr)
    return policy == "never" or _pull(session, image, quiet=session.args.quiet)


def create(session: Session) -> int:
    container_id, code = _create(session)
    if container_id:
        session.output.line(container_id)
    return code


def run(session: Session) -> int:
    args = session.args
    if (args.interactive or args.tty) and not args.detach:
        from carte.cli.commands.interactive import run_interactive

        if not _image_at_hand(session):
            return DAEMON_ERROR
        return run_interactive(session)
    container_id, code = _create(session)
    if not container_id:
        return code
    if args.detach:
        try:
            session.command("StartContainer", ref=container_id)
        except ApiError as error:
            _error(_strip_exit_tag(error.message))
            return _start_code(error)
        session.output.line(container_id)
        return 0
    return _run_attached(session, container_id)


def _run_attached(session: Session, container_id: str) -> int:
    """Start the container and stream its output until it exits; its exit code. The daemon
    starts it from within the stream (nothing can be missed); Ctrl-C is passed on as SIGINT."""
    path = f"/v1/containers/{container_id}/logs?until_exit=1&start=1"
    stream = session.client.open("GET", path)
    try:
        lines = stream.lines()
        ended = b'{"error": {"message": "the daemon ended the stream"}}'
        first = compact_json.loads(next(lines, ended))
        if "error" in first:
            message = str(first["error"].get("message", ""))
            _error(_strip_exit_tag(message))
            if session.args.rm:
                try:
                    session.command("RemoveContainer", ref=container_id, force=True)
                except ApiError:
                    pass
            return _start_code(ApiError(500, "", message))
        while True:
            try:
                for line in lines:
                    item = compact_json.loads(line)
                    if "exit" in item:
                        return int(item["exit"]["status_code"])
                    _write_output(item, timestamps=False)
                return DAEMON_ERROR
            except KeyboardInterrupt:
                try:
                    session.command("KillContainer", ref=container_id, signal="INT")
                except ApiError:
                    return 130
    finally:
        stream.close()


def _write_output(item: dict[str, Any], *, timestamps: bool) -> None:
    target = sys.stdout if item.get("stream") == "stdout" else sys.stderr
    text = str(item.get("log", ""))
    if timestamps:
        text = f"{item.get('time', '')} {text}"
    target.write(text)
    target.flush()


def start(session: Session) -> int:
    def one(ref: str) -> None:
        session.command("StartContainer", ref=ref)
        session.output.line(ref)

    args = session.args
    if (args.attach or args.interactive) and len(args.containers) > 1:
        _error("you cannot start and attach multiple containers at once")
        return 1
    if args.attach or args.interactive:
        ref = args.containers[0]
        try:
            details = session.command("InspectContainer", ref=ref)
        except ApiError as error:
            _error(error.message)
            return 1
        if args.interactive or details["config"]["tty"]:
            from carte.cli.commands.interactive import start_attached

            return start_attached(session, details["id"], stdin=args.interactive)
        return _run_attached(_with_rm(session), details["id"])
    return _each(session, one)


def _with_rm(session: Session) -> Session:
    session.args.rm = False
    return session


# --- ps -------------------------------------------------------------------------------------


def ps(session: Session) -> int:
    args = session.args
    try:
        filters = _filters(args.filter)
    except RunOptionError as error:
        _error(str(error))
        return 1
    last = 1 if args.latest else args.last
    rows = session.command("ListContainers", all=args.all or last > 0, filters=filters)
    if last > 0:  # the newest first, as listed
        rows = rows[:last]
    out = session.output
    fmt = args.ps_format or ("json" if out.json else "table")
    if args.quiet:
        for row in rows:
            out.line(row["id"] if args.no_trunc else row["id"][:12])
        return 0
    if fmt == "json":
        for row in rows:
            import json

            out.line(json.dumps({**row, **_ps_fields(row, args.no_trunc)}))
        return 0
    if fmt != "table":
        return templated(
            session, fmt, rows, lambda row: _ps_fields(row, args.no_trunc), _PS_HEADERS
        )
    out.table(
        ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
        [
            [
                f["ID"],
                f["Image"],
                f["Command"],
                f["RunningFor"],
                f["Status"],
                f["Ports"],
                f["Names"],
            ]
            for f in (_ps_fields(row, args.no_trunc) for row in rows)
        ],
    )
    return 0


def _ps_fields(row: dict[str, Any], no_trunc: bool) -> dict[str, str]:
    command_text = row["command"]
    if not no_trunc and len(command_text) > 20:
        command_text = command_text[:19] + "…"
    ports = ", ".join(
        (f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}->" if p.get("host_port") else "")
        + f"{p['container_port']}/{p['protocol']}"
        for p in row.get("ports", [])
    )
    labels = ",".join(f"{k}={v}" for k, v in row.get("labels", {}).items())
    return {
        "ID": row["id"] if no_trunc else row["id"][:12],
        "Image": row["image"],
        "Command": compact_json.quoted(command_text),
        "CreatedAt": row["created"],
        "RunningFor": _ago(row["created"]),
        "Status": row["status"],
        "State": row["state"],
        "Ports": ports,
        "Names": row["name"],
        "Labels": labels,
    }


_PS_HEADERS = {
    "ID": "CONTAINER ID", "RunningFor": "CREATED", "Names": "NAMES", "Image": "IMAGE",
    "Command": "COMMAND", "Status": "STATUS", "Ports": "PORTS", "State": "STATE",
}  # fmt: skip


def _ago(created: str) -> str:
    moment = _utc_seconds(created)
    if moment is None:
        return ""
    seconds = time.time() - moment
    if seconds < 1:
        return "Less than a second ago"
    if seconds < 60:
        return f"{int(seconds)} second{'s' if int(seconds) != 1 else ''} ago"
    if seconds < 3600:
        minutes = round(seconds / 60)
        return "About a minute ago" if minutes == 1 else f"{minutes} minutes ago"
    if seconds < 86400 * 2:
        hours = round(seconds / 3600)
        return "About an hour ago" if hours == 1 else f"{hours} hours ago"
    return f"{round(seconds / 86400)} days ago"


def _utc_seconds(stamp: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 time; the API's UTC form `2026-12-07T18:38:41.86Z`
    is read without `datetime` (~2 ms of `ps`), any other through it; None if unreadable."""
    date, _, clock = stamp.partition("T")
    parts = date.split("-")
    if stamp.endswith("Z") and len(parts) == 3 and clock.count(":") == 2:
        try:
            year, month, day = (int(part) for part in parts)
            hour, minute, second = clock[:-1].split(":")
            if not (1 <= month <= 12 and 1 <= day <= 31):
                return None
            # days since 1970-01-01 of a proleptic Gregorian date (years counted from March)
            year -= month <= 2
            era_days = 365 * year + year // 4 - year // 100 + year // 400
            days = era_days + (153 * ((month + 9) % 12) + 2) // 5 + day - 719469
            return days * 86400 + int(hour) * 3600 + int(minute) * 60 + float(second)
        except ValueError:
            return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- stop, kill, restart, rm, pause ---------------------------------------------------------


def stop(session: Session) -> int:
    args = session.args
    return _each_container(session, "StopContainer", timeout=args.time, signal=args.signal)


def kill(session: Session) -> int:
    return _each_container(session, "KillContainer", signal=session.args.signal)


def restart(session: Session) -> int:
    args = session.args
    return _each_container(session, "RestartContainer", timeout=args.time, signal=args.signal)


def remove(session: Session) -> int:
    args = session.args
    return _each_container(session, "RemoveContainer", force=args.force, volumes=args.volumes)


def pause(session: Session) -> int:
    return _each_container(session, "PauseContainer")


def unpause(session: Session) -> int:
    return _each_container(session, "UnpauseContainer")


def _each_container(session: Session, command: str, **body: Any) -> int:
    """The bus command `command` for each container argument, printing each ref done."""

    def one(ref: str) -> None:
        session.command(command, ref=ref, **body)
        session.output.line(ref)

    return _each(session, one)


def wait(session: Session) -> int:
    def one(ref: str) -> None:
        result = session.command("WaitContainer", ref=ref)
        session.output.line(str(result["status_code"]))

    return _each(session, one)


_INSPECTED = (
    ("container", "InspectContainer", "ref", docker_container),
    ("image", "InspectImage", "ref", docker_image),
    ("network", "InspectNetwork", "name", None),
    ("volume", "InspectVolume", "name", None),
)


def inspect(session: Session) -> int:
    """`inspect NAME...`: each name as a container, else (without --type) as an image, a
    network or a volume, as Docker looks them up; Docker's keys beside Carte's."""
    found: list[Any] = []
    wanted = session.args.type
    kinds = [kind for kind in _INSPECTED if wanted in (None, kind[0])]

    def one(ref: str) -> None:
        for at, (_, command, key, shape) in enumerate(kinds):
            try:
                details = session.command(command, **{key: ref})
            except ApiError as error:
                if error.status != 404 or at == len(kinds) - 1:
                    raise ApiError(
                        error.status, error.code, _no_object(error, ref, kinds)
                    ) from None
                continue
            found.append(shape(details) if shape else details)
            return

    code = _each(session, one)
    return show_inspected(session, found, session.args.template) or code


def _no_object(error: ApiError, ref: str, kinds: Any) -> str:
    """Docker's "no such object" when every kind was tried; the kind's own message else."""
    if len(kinds) > 1 and error.status == 404:
        return f'no such object: "{ref}" (no container, image, network or volume has that name)'
    return error.message


def port(session: Session) -> int:
    """Docker's `port`: every published port as `80/tcp -> 0.0.0.0:32768`, or the host
    addresses of one (`PRIVATE_PORT[/PROTO]`, tcp when not said)."""
    args = session.args
    details = docker_container(session.command("InspectContainer", ref=args.container))
    published: dict[str, Any] = details["NetworkSettings"]["Ports"]
    if args.private_port is None:
        for key, bindings in published.items():
            for binding in bindings:
                session.output.line(f"{key} -> {binding['HostIp']}:{binding['HostPort']}")
        return 0
    number, _, protocol = args.private_port.partition("/")
    key = f"{number}/{protocol or 'tcp'}"
    if not number.isdigit() or protocol not in ("", "tcp", "udp", "sctp"):
        return fail(f'invalid port "{args.private_port}": use PORT or PORT/tcp|udp, e.g. 80/tcp')
    if key not in published:
        return fail(f"no public port '{key}' published for {args.container}")
    for binding in published[key]:
        session.output.line(f"{binding['HostIp']}:{binding['HostPort']}")
    return 0


def rename(session: Session) -> int:
    session.command("RenameContainer", ref=session.args.container, name=session.args.new_name)
    return 0


def update(session: Session) -> int:
    args = session.args
    resources: dict[str, Any] = {}
    try:
        if args.memory is not None:
            resources["memory"] = parse_size(args.memory, "--memory")
        if args.memory_swap is not None:
            resources["memory_swap"] = (
                -1 if args.memory_swap == "-1" else parse_size(args.memory_swap, "--memory-swap")
            )
        if args.cpus is not None:
            resources["nano_cpus"] = int(float(args.cpus) * 1_000_000_000)
        if args.cpu_shares is not None:
            resources["cpu_shares"] = int(args.cpu_shares)
        if args.cpuset_cpus is not None:
            resources["cpuset_cpus"] = args.cpuset_cpus
        if args.pids_limit is not None:
            resources["pids_limit"] = int(args.pids_limit)
    except (RunOptionError, ValueError) as error:
        _error(f"invalid update value: {error}")
        return 1
    body: dict[str, Any] = {"resources": resources}
    if args.restart is not None:
        name, _, count = args.restart.partition(":")
        body["restart"] = {"name": name, "maximum_retry_count": int(count or 0)}

    def one(ref: str) -> None:
        session.command("UpdateContainer", ref=ref, **body)
        session.output.line(ref)

    return _each(session, one)


def prune(session: Session) -> int:
    try:
        filters = _filters(session.args.filter)
    except RunOptionError as error:
        _error(str(error))
        return 1
    session.output.pruned(session.command("PruneContainers", filters=filters), "Containers")
    return 0


# --- logs -----------------------------------------------------------------------------------


def _service_named(session: Session, ref: str) -> tuple[str, list[str]] | None:
    """(stack, [service]) when no container is `ref` but one stack's service is (its name,
    STACK_SERVICE or STACK/SERVICE): `carte logs SERVICE` as Compose users type it."""
    try:
        services = session.command("ListServices")
    except ApiError:
        return None
    matches = [
        (row["stack"], [row["name"]])
        for row in services
        if ref in (row["name"], f"{row['stack']}_{row['name']}", f"{row['stack']}/{row['name']}")
    ]
    return matches[0] if len(matches) == 1 else None


def logs(session: Session) -> int:
    from urllib.parse import quote, urlencode

    from carte.cli.commands.system import parse_since

    args = session.args
    query: dict[str, str] = {"follow": "1" if args.follow else "0"}
    if args.tail != "all":
        if not args.tail.lstrip("-").isdigit():
            _error(f'invalid --tail "{args.tail}": use a number of lines or "all"')
            return 1
        query["tail"] = args.tail
    if args.since:
        query["since"] = repr(parse_since(args.since))
    if args.until:
        query["until"] = repr(parse_since(args.until))
    path = f"/v1/containers/{quote(args.container, safe='')}/logs?{urlencode(query)}"
    try:
        stream = session.client.open("GET", path)
    except ApiError as error:
        service = _service_named(session, args.container) if error.status == 404 else None
        if service is None:
            raise
        from carte.cli.commands.compose import follow_logs

        return follow_logs(session, *service)
    try:
        for line in stream.lines():
            _write_output(compact_json.loads(line), timestamps=args.timestamps)
    except KeyboardInterrupt:
        return 0
    finally:
        stream.close()
    return 0
