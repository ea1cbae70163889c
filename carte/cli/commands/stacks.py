"""Stack commands: apply, stack ls|ps|rm, service ls|ps|logs|scale|inspect, rollout
status|history|undo.

A SERVICE argument is `STACK_SERVICE`, `STACK/SERVICE`, or a service name that only one
stack has.
"""

from __future__ import annotations

import argparse
import os

from carte.cli.commands import Commands, Session, fail, warn
from carte.cli.commands.services import (
    service_update,
    show_placements,
    update_arguments,
    with_cluster_counts,
)

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

_DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
_ROLLOUT_END = ("completed", "rolled_back", "failed", "paused", "idle")


def register(commands: Commands) -> None:
    commands.add("apply", run=apply, help="deploy a Compose file as a stack", arguments=_apply)
    stack = commands.group("stack", help="manage stacks")
    stack.add("ls", run=list_stacks, help="list stacks", arguments=None)
    stack.add("ps", run=stack_ps, help="list a stack's replicas", arguments=_stack_name)
    stack.add("rm", run=remove_stacks, help="remove stacks", arguments=_stack_names)
    service = commands.group("service", help="manage services of stacks")
    service.add("ls", run=list_services, help="list services", arguments=_optional_stack)
    service.add("ps", run=service_ps, help="list a service's replicas", arguments=_service)
    service.add("logs", run=service_logs, help="show a service's logs", arguments=_logs)
    service.add("scale", run=scale, help="set replica counts", arguments=_scale)
    service.add("inspect", run=inspect, help="show a service in detail", arguments=_service)
    service.add(
        "update",
        run=service_update,
        help="change replicas' limits in place",
        arguments=update_arguments,
    )
    rollout = commands.group("rollout", help="follow and undo rolling updates")
    rollout.add("status", run=rollout_status, help="follow a rollout", arguments=_status)
    rollout.add("history", run=rollout_history, help="list kept revisions", arguments=_service)
    rollout.add("undo", run=rollout_undo, help="go back to a revision", arguments=_undo)


def _apply(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--file",
        default="",
        help="Compose file (default: compose.yaml, docker-compose.yml...)",
    )
    parser.add_argument(
        "-n",
        "--name",
        default="",
        help="stack name (default: the file's name:, else its directory)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        dest="profiles",
        help="enable services of this Compose profile (repeatable; also COMPOSE_PROFILES)",
    )


def _stack_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stack")


def _stack_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stacks", nargs="+", metavar="STACK")


def _optional_stack(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stack", nargs="?", default="")


def _service(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", metavar="SERVICE", help="STACK_SERVICE or STACK/SERVICE")


def _logs(parser: argparse.ArgumentParser) -> None:
    _service(parser)
    parser.add_argument("-f", "--follow", action="store_true", help="follow, new replicas too")
    parser.add_argument("--tail", default="all", help="lines from the end of each replica's log")
    parser.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")


def _scale(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")


def _status(parser: argparse.ArgumentParser) -> None:
    _service(parser)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to follow")


def _undo(parser: argparse.ArgumentParser) -> None:
    _service(parser)
    parser.add_argument("--to-revision", type=int, default=0, help="default: the previous one")


def resolve_service(session: Session, ref: str) -> tuple[str, str] | None:
    """(stack, service) for a SERVICE argument, or None after printing why not."""
    return _resolve(session, ref)


def _resolve(session: Session, ref: str) -> tuple[str, str] | None:
    """(stack, service) for a SERVICE argument, or None after printing why not."""
    services = session.command("ListServices")
    for row in services:
        if ref in (f"{row['stack']}_{row['name']}", f"{row['stack']}/{row['name']}"):
            return row["stack"], row["name"]
    named = [row for row in services if row["name"] == ref]
    if len(named) == 1:
        return named[0]["stack"], named[0]["name"]
    if named:
        choices = ", ".join(f"{r['stack']}_{r['name']}" for r in named)
        fail(f'service "{ref}" is in several stacks; name one of {choices}')
    else:
        fail(f'service "{ref}" not found; see carte service ls')
    return None


def apply(session: Session) -> int:
    given = session.args.file or next(
        (name for name in _DEFAULT_FILES if os.path.exists(name)), _DEFAULT_FILES[0]
    )
    path = os.path.abspath(given)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        if session.args.file:
            return fail(f"{given}: the Compose file is missing ({path}); check the path")
        names = ", ".join(_DEFAULT_FILES)
        return fail(f"no Compose file ({names}) in {os.getcwd()}; pass one with -f")
    except OSError as error:
        return fail(f"{given}: {error.strerror}; pass the Compose file with -f")
    project_dir = os.path.dirname(path)
    name = session.args.name  # "" lets the daemon take the file's name: or the directory's
    plan = session.command(
        "ApplyStack",
        name=name,
        manifest=text,
        file_name=os.path.basename(path),
        project_dir=project_dir,
        env=dict(os.environ),
        dry_run=session.args.dry_run,
        profiles=session.args.profiles,
    )
    warn(plan)
    out = session.output
    if out.json:
        out.data(plan)
        return 0
    rows = [[a["action"], a["kind"], a["name"], a["detail"]] for a in plan["actions"]]
    out.table(["ACTION", "KIND", "NAME", "DETAIL"], rows)
    if plan["dry_run"]:
        out.line(f"dry run: stack {plan['stack']} not changed")
    return 0


def list_stacks(session: Session) -> int:
    session.output.listing(
        session.command("ListStacks"),
        ["NAME", "SERVICES", "FILE", "UPDATED"],
        lambda s: [s["name"], s["services"], s["file_name"], s["updated"]],
    )
    return 0


def _replica_table(session: Session, replicas: list[Any]) -> None:
    session.output.listing(
        replicas,
        ["NAME", "SERVICE", "REV", "IMAGE", "STATUS", "READY", "IP"],
        lambda r: [
            r["name"],
            f"{r['stack']}_{r['service']}",
            r["revision"],
            r["image"],
            r["status"],
            "yes" if r["ready"] else "no",
            r["ip"],
        ],
    )


def stack_ps(session: Session) -> int:
    stacks = {s["name"] for s in session.command("ListStacks")}
    if session.args.stack not in stacks:
        return fail(f'stack "{session.args.stack}" not found; see carte stack ls')
    if not show_placements(session, session.args.stack):
        _replica_table(session, session.command("ListReplicas", stack=session.args.stack))
    return 0


def remove_stacks(session: Session) -> int:
    for name in session.args.stacks:
        session.command("RemoveStack", name=name)
        session.output.line(name)
    return 0


def list_services(session: Session) -> int:
    services = with_cluster_counts(
        session, session.command("ListServices", stack=session.args.stack), session.args.stack
    )
    session.output.listing(
        services,
        ["NAME", "IMAGE", "DESIRED", "RUNNING", "READY", "AUTOSCALE", "REV", "ROLLOUT", "PORTS"],
        _service_row,
    )
    return 0


def _service_row(s: dict[str, Any]) -> list[Any]:
    """A service's row in `service ls`."""
    scale = s.get("autoscale")
    bounds = f"{scale['min']}-{scale['max']}" if scale else "-"
    ports = ", ".join(
        f"{p['host_port']}->{p['container_port']}/{p['protocol']}" for p in s["ports"]
    )
    return [
        f"{s['stack']}_{s['name']}",
        s["image"],
        s["desired"],
        s["running"],
        s["ready"],
        bounds,
        s["revision"],
        s["rollout"] or "-",
        ports,
    ]


def service_ps(session: Session) -> int:
    found = _resolve(session, session.args.service)
    if found is None:
        return 1
    stack, name = found
    if not show_placements(session, stack, name):
        _replica_table(session, session.command("ListReplicas", stack=stack, service=name))
    return 0


def service_logs(session: Session) -> int:
    """Every replica's lines prefixed as `docker service logs` does (`STACK_SERVICE.N@NODE |`);
    with -f, replicas that start later are followed too, until the service is removed."""
    from carte.cli.replica_logs import LogOptions, bad_tail, show_replica_logs

    args = session.args
    if problem := bad_tail(args.tail):
        return fail(problem)
    found = _resolve(session, args.service)
    if found is None:
        return 1
    stack, name = found
    node = _node_name(session)
    options = LogOptions(follow=args.follow, tail=args.tail, timestamps=args.timestamps)
    return show_replica_logs(
        session,
        lambda: session.command("ListReplicas", stack=stack, service=name),
        lambda row: f"{stack}_{name}.{row['replica']}@{node}",
        options,
    )


def _node_name(session: Session) -> str:
    """The daemon's machine as `docker service logs` names a task's node: the host of a
    tcp:// daemon, else this machine's hostname."""
    import socket

    host = session.args.host or os.environ.get("CARTE_HOST") or ""
    if host.startswith("tcp://"):
        return host[len("tcp://") :].rpartition(":")[0].strip("[]")
    return socket.gethostname()


def scale(session: Session) -> int:
    wanted: list[tuple[str, str, int]] = []
    for pair in session.args.pairs:
        ref, sep, count = pair.rpartition("=")
        if not sep or not count.isdigit():
            return fail(f'"{pair}" is not SERVICE=REPLICAS with a count of 0 or more')
        found = _resolve(session, ref)
        if found is None:
            return 1
        wanted.append((*found, int(count)))
    for stack, name, count in wanted:
        session.command("ScaleService", stack=stack, service=name, replicas=count)
        session.output.line(f"{stack}_{name} scaled to {count}")
    return 0


def inspect(session: Session) -> int:
    found = _resolve(session, session.args.service)
    if found is None:
        return 1
    details = session.command("InspectService", stack=found[0], service=found[1])
    session.output.data(details)
    return 0


def rollout_status(session: Session) -> int:
    """Follow the latest rollout until it ends: 0 when completed, 1 when it failed, paused
    or was rolled back (or the timeout passed)."""
    import time

    deadline = time.monotonic() + session.args.timeout
    try:
        found = _within(deadline, lambda: _resolve(session, session.args.service))
    except _Expired:
        return fail(f"no answer about {session.args.service} in {session.args.timeout:g} s")
    if found is None:
        return 1
    stack, name = found
    said = ""
    while True:
        try:
            rollout = _within(
                deadline, lambda: session.command("GetRollout", stack=stack, service=name)
            )
        except _Expired:
            return fail(f"rollout of {stack}_{name} not done after {session.args.timeout:g} s")
        state = rollout["state"]
        line = (
            f"{stack}_{name}: revision {rollout['revision']} {state}, "
            f"{rollout['updated']}/{rollout['total']} updated"
        )
        if rollout["message"]:
            line += f": {rollout['message']}"
        if line != said and not session.output.json:
            session.output.line(line)
            said = line
        if state in _ROLLOUT_END:
            if session.output.json:
                session.output.data(rollout)
            return 0 if state in ("completed", "idle") else 1
        if time.monotonic() + 0.25 > deadline:
            return fail(f"rollout of {stack}_{name} still {state} after {session.args.timeout:g} s")
        time.sleep(0.25)


class _Expired(Exception):
    """The deadline of `_within` passed (not an OSError: the transport must not take it for a
    connection problem)."""


def _within(deadline: float, call: Callable[[], T]) -> T:
    """`call()`, interrupted with `_Expired` at the monotonic `deadline` (a request to a
    busy daemon must not carry `rollout status` past its --timeout)."""
    import signal
    import time

    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired

    def expired(_signum: int, _frame: object) -> None:
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, left)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def rollout_history(session: Session) -> int:
    found = _resolve(session, session.args.service)
    if found is None:
        return 1
    session.output.listing(
        session.command("ListRevisions", stack=found[0], service=found[1]),
        ["REVISION", "CREATED", "IMAGE", "CHANGE", "CURRENT"],
        lambda r: [
            r["revision"],
            r["created"],
            r["image"],
            r["change"],
            "*" if r["current"] else "",
        ],
    )
    return 0


def rollout_undo(session: Session) -> int:
    found = _resolve(session, session.args.service)
    if found is None:
        return 1
    rollout = session.command(
        "UndoRollout",
        stack=found[0],
        service=found[1],
        to_revision=session.args.to_revision,
    )
    session.output.line(
        f"{found[0]}_{found[1]}: rolling to revision {rollout['revision']} ({rollout['message']})"
    )
    return 0
