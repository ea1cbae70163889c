"""`carte service update --cpus N --memory M [--pids-limit N] SERVICE`: vertical scaling;
and the cluster view of `carte service ps` / `carte stack ps` (`show_placements`).

The new limits are recorded in the service's desired state (the stacks handler's
`UpdateServiceResources`) and applied to the running replicas in place: same containers,
same processes, no restart. Registered in the `service` group by carte.cli.commands.stacks.
"""

from __future__ import annotations

import argparse
import sys

from carte.cli.commands import Session
from carte.cli.run_options import RunOptionError, parse_size
from carte.cli.transport import ApiError

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from typing import Any


def update_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpus", help="CPUs per replica (e.g. 0.5)")
    parser.add_argument("-m", "--memory", help="memory limit per replica (e.g. 256m)")
    parser.add_argument("--pids-limit", type=int, help="process limit per replica")
    parser.add_argument("service", metavar="SERVICE", help="STACK_SERVICE or STACK/SERVICE")


def _limits(args: argparse.Namespace) -> dict[str, int]:
    """The Resources body; `RunOptionError` naming the flag for a bad value."""
    resources: dict[str, int] = {}
    if args.cpus is not None:
        try:
            cpus = float(args.cpus)
        except ValueError:
            cpus = -1.0
        if cpus <= 0:
            raise RunOptionError(f'invalid --cpus "{args.cpus}": use a positive number such as 0.5')
        resources["nano_cpus"] = int(cpus * 1_000_000_000)
    if args.memory is not None:
        resources["memory"] = parse_size(args.memory, "--memory")
        if resources["memory"] < 6 * 1024 * 1024:
            raise RunOptionError(f'invalid --memory "{args.memory}": the minimum is 6m')
    if args.pids_limit is not None:
        if args.pids_limit <= 0:
            raise RunOptionError(f'invalid --pids-limit "{args.pids_limit}": use 1 or more')
        resources["pids_limit"] = args.pids_limit
    if not resources:
        raise RunOptionError("nothing to update; pass --cpus, --memory or --pids-limit")
    return resources


def service_update(session: Session) -> int:
    from carte.cli.commands.stacks import resolve_service

    try:
        resources = _limits(session.args)
    except RunOptionError as error:
        print(f"carte: {error}", file=sys.stderr)
        return 125
    found = resolve_service(session, session.args.service)
    if found is None:
        return 1
    stack, name = found
    session.client.post_json(
        "/v1/commands/UpdateServiceResources",
        {"stack": stack, "service": name, "resources": resources},
    )
    session.output.line(f"{stack}_{name} updated in place")
    return 0


def show_placements(session: Session, stack: str, service: str = "") -> bool:
    """On a control plane: print each replica with its node and, as `docker service ps`'s
    CURRENT STATE, its status in `ps`'s words ("Up 5 seconds (healthy)", "Exited (1) 2
    seconds ago", "Pending: REASON", "Assigned"); the ERROR column holds a reason the status
    does not already say. Return True; False on a daemon that places nothing (a single
    machine, a worker)."""
    try:
        placed = session.command("ListPlacements", stack=stack, service=service)
    except ApiError as error:
        if error.status in (404, 503):  # no scheduler handler on this daemon
            return False
        raise
    if not placed:
        return False
    out = session.output
    if out.json:
        out.data(placed)
        return True
    out.table(
        ["NAME", "NODE", "REV", "CURRENT STATE", "READY", "CONTAINER", "ERROR"],
        [
            [
                p["name"],
                p["node"] or "-",
                p["revision"] or "-",
                p["status"] or p["state"],
                "yes" if p["ready"] else "no",
                p["container_id"][:12] or "-",
                "" if p["reason"] in p["status"] else p["reason"],
            ]
            for p in placed
        ],
    )
    return True


def with_cluster_counts(session: Session, services: list[Any], stack: str) -> list[Any]:
    """On a control plane: ``services`` with running/ready counted over every node (the
    stacks handler counts only this daemon's containers)."""
    try:
        placed = session.command("ListPlacements", stack=stack)
    except ApiError as error:
        if error.status in (404, 503):
            return services
        raise
    if not placed:
        return services
    counted: dict[tuple[str, str], list[int]] = {}
    for row in placed:
        counts = counted.setdefault((row["stack"], row["service"]), [0, 0])
        counts[0] += row["state"] == "running"
        counts[1] += bool(row["ready"])
    for service in services:
        running, ready = counted.get((service["stack"], service["name"]), [0, 0])
        service["running"], service["ready"] = running, ready
    return services
