"""Node commands: node join, ls, inspect, update, drain, activate, rm."""

from __future__ import annotations

import argparse
from typing import Any

from carte.cli.commands import Commands, Session, UsageError, each, remove_each

GIB = 1 << 30


def register(commands: Commands) -> None:
    node = commands.group("node", help="manage the cluster's nodes")
    node.add("join", run=join, help="join this daemon to a cluster", arguments=_join)
    node.add("ls", run=list_nodes, help="list the nodes", arguments=_list)
    node.add_inspect("InspectNode", help="show nodes in detail", metavar="NODE")
    node.add("update", run=update, help="change a node's labels", arguments=_update)
    node.add("drain", run=drain, help="take no new replicas; move them off", arguments=_names)
    node.add("activate", run=activate, help="take replicas again", arguments=_names)
    node.add("rm", run=remove, help="remove nodes, revoking them", arguments=_remove)
    node.add("leave", run=leave, help="drain this node and leave its cluster", arguments=_leave)


def _join(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", required=True, help="from carte cluster join-token")
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="tcp://HOST:PORT",
        help="a control plane (repeat it for others to fail over to)",
    )
    parser.add_argument("--name", default="", help="node name (default: the host name)")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--advertise", default="", metavar="ADDR", help="this node's address")


def _leave(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drain-timeout", type=float, default=60.0, help="seconds to wait for replicas to move"
    )


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only names")


def _names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NODE")


def _update(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-add", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label-rm", action="append", default=[], metavar="KEY")
    parser.add_argument("--availability", choices=("active", "drain"))
    parser.add_argument("name", metavar="NODE")


def _remove(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="even while it is ready")
    _names(parser)


def _labels(values: list[str], flag: str) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key or not sep:
            raise UsageError(f'{flag} "{value}" is not KEY=VALUE')
        labels[key] = val
    return labels


def join(session: Session) -> int:
    args = session.args
    node = session.command(
        "JoinCluster",
        token=args.token,
        server=args.server[0],
        servers=args.server[1:],
        name=args.name,
        labels=_labels(args.label, "--label"),
        advertise=args.advertise,
    )
    if session.output.json:
        session.output.data(node)
    else:  # the control plane that answered: a later --server when the first is down
        through = session.command("GetClusterStatus")["server"] or args.server[0]
        session.output.line(f"Node {node['name']} joined {through}")
    return 0


def list_nodes(session: Session) -> int:
    session.output.listing(
        session.command("ListNodes"),
        ["NAME", "STATUS", "AVAILABILITY", "ROLE", "LOAD", "MEMORY", "ADDRESSES", "LABELS"],
        lambda n: [
            n["name"],
            n["status"],
            n["availability"],
            n["role"],
            *_load(n.get("load")),
            ",".join(n["addresses"]),
            ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())),
        ],
        quiet_key="name" if session.args.quiet else None,
    )
    return 0


def _load(load: dict[str, Any] | None) -> tuple[str, str]:
    """LOAD (1-minute load average / CPUs) and MEMORY (used / total) of a heartbeat's load."""
    if not load:
        return "-", "-"
    used, total = load["memory_used"] / GIB, load["memory_total"] / GIB
    return f"{load['load1']:.2f}/{load['cpus']}", f"{used:.1f}/{total:.1f} GiB"


def update(session: Session) -> int:
    args = session.args
    node = session.command(
        "UpdateNode",
        name=args.name,
        label_add=_labels(args.label_add, "--label-add"),
        label_rm=args.label_rm,
        availability=args.availability,
    )
    if session.output.json:
        session.output.data(node)
    else:
        session.output.line(node["name"])
    return 0


def _set_availability(session: Session, availability: str) -> int:
    def apply(name: str) -> None:
        node = session.command("UpdateNode", name=name, availability=availability)
        if not session.output.json:
            session.output.line(node["name"])

    return each(session.args.names, apply)


def drain(session: Session) -> int:
    return _set_availability(session, "drain")


def activate(session: Session) -> int:
    return _set_availability(session, "active")


def remove(session: Session) -> int:
    return remove_each(session, "RemoveNode", force=session.args.force)


def leave(session: Session) -> int:
    drained = session.command("LeaveCluster", drain_timeout=session.args.drain_timeout)
    if session.output.json:
        session.output.data({"drained": drained})
    elif drained:
        session.output.line("Drained and left the cluster")
    else:
        session.output.line("Left the cluster (its control plane did not take the leave)")
    return 0
