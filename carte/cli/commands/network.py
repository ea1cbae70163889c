"""Network commands: network create, ls, inspect, rm, connect, disconnect, prune, policy."""

from __future__ import annotations

import argparse

from carte.cli.commands import (
    Commands,
    Session,
    add_template_format,
    each,
    fail,
    inspect_arguments,
    inspect_each,
    remove_each,
    templated,
)

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def register(commands: Commands) -> None:
    network = commands.group("network", help="manage networks")
    network.add("create", run=create, help="create a network", arguments=_create)
    network.add("ls", run=list_networks, help="list networks", arguments=_list)
    network.add("inspect", run=inspect, help="show networks in detail", arguments=_inspect)
    network.add("rm", run=remove, help="remove networks", arguments=_remove)
    network.add("connect", run=connect, help="connect a container", arguments=_connect)
    network.add("disconnect", run=disconnect, help="disconnect a container", arguments=_pair)
    network.add("prune", run=prune, help="remove unused networks", arguments=_prune)
    network.add(
        "rotate-keys",
        run=rotate_keys,
        help="give every node a new WireGuard key (encrypted networks)",
        arguments=_rotate,
    )
    policy = network.group("policy", help="allow traffic between containers of a network")
    policy.add("add", run=add_policy, help="allow a flow (default-deny)", arguments=_policy)
    policy.add("ls", run=list_policies, help="list a network's policies", arguments=_network)
    policy.add("rm", run=remove_policy, help="remove a policy", arguments=_policy_rm)


def _create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--subnet", default="", help="CIDR, e.g. 10.5.0.0/24")
    parser.add_argument("--gateway", default="", help="address inside the subnet")
    parser.add_argument("--internal", action="store_true", help="no traffic to the outside")
    parser.add_argument("-l", "--label", action="append", default=[], help="KEY=VALUE")
    parser.add_argument(
        "-d",
        "--driver",
        default="bridge",
        help="bridge, or overlay (the same: in a cluster every network spans its nodes)",
    )
    parser.add_argument(
        "-o", "--opt", action="append", default=[], help="KEY[=VALUE], e.g. encrypted=true"
    )


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only network IDs")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate the IDs")
    parser.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        help="name=, id=, label=KEY[=VALUE], driver=, type=custom|builtin, dangling=true|false",
    )
    add_template_format(parser, "list_format")


_inspect = inspect_arguments("NETWORK", "{{.Subnet}}")


def _names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NETWORK")


def _remove(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="no error for a missing one")
    _names(parser)


def _pair(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("network")
    parser.add_argument("container")


def _connect(parser: argparse.ArgumentParser) -> None:
    _pair(parser)
    parser.add_argument("--alias", action="append", default=[], help="DNS alias")
    parser.add_argument("--ip", default="", help="IPv4 address on the network")


def _prune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="do not ask (always true)")


def _rotate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the nodes (default 30)"
    )


def _network(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("network")


def _policy(parser: argparse.ArgumentParser) -> None:
    _network(parser)
    parser.add_argument("--from", dest="source", required=True, help="LABEL=VALUE or name=NAME")
    parser.add_argument("--to", dest="target", required=True, help="LABEL=VALUE or name=NAME")
    parser.add_argument("--port", default="", help="PORT[/tcp|/udp]; omit for any port")


def _policy_rm(parser: argparse.ArgumentParser) -> None:
    _network(parser)
    parser.add_argument("ids", nargs="+", metavar="POLICY")


def create(session: Session) -> int:
    args = session.args
    if args.driver not in ("bridge", "overlay"):
        return fail(f'network driver "{args.driver}" is unknown; use bridge or overlay')
    labels = {}
    for label in args.label:
        key, sep, value = label.partition("=")
        if not key:
            return fail(f'label "{label}" is not KEY=VALUE')
        labels[key] = value if sep else ""
    network = session.command(
        "CreateNetwork",
        name=args.name,
        subnet=args.subnet,
        gateway=args.gateway,
        internal=args.internal,
        labels=labels,
        options=dict(option.partition("=")[::2] for option in args.opt),
    )
    session.output.line(network["id"])
    return 0


def list_networks(session: Session) -> int:
    args = session.args
    try:
        keep = _network_filter(args.filter)
    except ValueError as error:
        return fail(f"{error}; see carte network ls --help")
    width = None if args.no_trunc else 12
    networks = [{**n, "id": n["id"][:width]} for n in session.command("ListNetworks") if keep(n)]
    fmt = args.list_format
    if fmt not in (None, "table", "json"):
        return templated(session, fmt, networks, _network_fields, {"ID": "NETWORK ID"})
    session.output.format = fmt or session.output.format
    session.output.listing(
        networks,
        ["NETWORK ID", "NAME", "DRIVER", "SUBNET", "INTERNAL", "CONTAINERS"],
        lambda n: [
            n["id"],
            n["name"],
            n.get("driver", "bridge"),
            n["subnet"],
            "yes" if n["internal"] else "no",
            len(n["containers"]),
        ],
        quiet_key="id" if args.quiet else None,
    )
    return 0


_BUILTIN = ("bridge", "host", "none")


def _network_filter(filters: list[str]) -> Callable[[dict[str, Any]], bool]:
    """`network ls -f` as Docker reads it: values of one key are alternatives, keys must all
    match; name= is a substring, id= a prefix. `ValueError` names a filter it cannot read."""
    wanted: dict[str, list[str]] = {}
    for given in filters:
        key, equals, value = given.partition("=")
        if not equals or key not in ("name", "id", "label", "driver", "type", "dangling"):
            raise ValueError(f'invalid filter "{given}"')
        if key == "type" and value not in ("custom", "builtin"):
            raise ValueError(f'invalid filter "{given}": type is custom or builtin')
        if key == "dangling" and value not in ("true", "false", "1", "0"):
            raise ValueError(f'invalid filter "{given}": dangling is true or false')
        wanted.setdefault(key, []).append(value)

    def one(key: str, value: str, network: dict[str, Any]) -> bool:
        labels = network.get("labels") or {}
        if key == "name":
            return value in network["name"]
        if key == "id":
            return bool(network["id"].startswith(value))
        if key == "label":
            name, has_value, expected = value.partition("=")
            return name in labels and (not has_value or labels[name] == expected)
        if key == "driver":
            return bool(value == network.get("driver", "bridge"))
        if key == "type":
            return (network["name"] in _BUILTIN) == (value == "builtin")
        return (not network["containers"]) == (value in ("true", "1"))  # dangling

    def keep(network: dict[str, Any]) -> bool:
        return all(any(one(k, v, network) for v in vs) for k, vs in wanted.items())

    return keep


def _network_fields(network: dict[str, Any]) -> dict[str, Any]:
    """A network under Docker's `network ls --format` names."""
    labels = ",".join(f"{k}={v}" for k, v in (network.get("labels") or {}).items())
    driver = network.get("driver", "bridge")
    return {
        "ID": network["id"], "Name": network["name"], "Driver": driver,
        "Scope": "swarm" if driver == "overlay" else "local", "Internal": network["internal"],
        "IPv6": False, "CreatedAt": network["created"], "Labels": labels,
        "Subnet": network["subnet"],
    }  # fmt: skip


def inspect(session: Session) -> int:
    return inspect_each(session, "InspectNetwork")


def remove(session: Session) -> int:
    return remove_each(session, "RemoveNetwork", missing_ok=session.args.force)


def connect(session: Session) -> int:
    args = session.args
    session.command(
        "ConnectNetwork",
        network=args.network,
        container=args.container,
        aliases=args.alias,
        ip=args.ip,
    )
    return 0


def disconnect(session: Session) -> int:
    args = session.args
    session.command("DisconnectNetwork", network=args.network, container=args.container)
    return 0


def prune(session: Session) -> int:
    session.output.pruned(session.command("PruneNetworks"), "Networks", space=False)
    return 0


def rotate_keys(session: Session) -> int:
    """Raise the cluster's key generation; exit 1 if a node had not followed in time."""
    rotation = session.command("RotateOverlayKeys", timeout=session.args.timeout)
    if session.output.json:
        session.output.data(rotation)
    elif not rotation["rotated"] and not rotation["pending"]:
        session.output.line(
            f"key generation {rotation['generation']}: no node has a WireGuard key "
            "(no node's kernel can encrypt)"
        )
    else:
        rotated = ", ".join(rotation["rotated"]) or "none"
        session.output.line(f"key generation {rotation['generation']}: rotated on {rotated}")
    if rotation["pending"]:
        return fail(
            f"not rotated yet on {', '.join(rotation['pending'])}; their tunnels keep the old "
            "key until they publish a new one (check them with carte node ls)"
        )
    return 0


def add_policy(session: Session) -> int:
    args = session.args
    port, protocol = 0, "tcp"
    if args.port:
        number, _, proto = args.port.partition("/")
        if not number.isdigit() or not 1 <= int(number) <= 65535 or proto not in ("", "tcp", "udp"):
            return fail(f'port "{args.port}" is malformed; write PORT[/tcp|/udp], e.g. 5432/tcp')
        port, protocol = int(number), proto or "tcp"
    policy = {
        "from_label": args.source,
        "to_label": args.target,
        "port": port,
        "protocol": protocol,
    }
    added = session.command("AddNetworkPolicy", network=args.network, policy=policy)
    session.output.line(added["id"])
    return 0


def list_policies(session: Session) -> int:
    session.output.listing(
        session.command("ListNetworkPolicies", network=session.args.network),
        ["POLICY ID", "FROM", "TO", "PORT"],
        lambda p: [
            p["id"],
            p["from_label"],
            p["to_label"],
            f"{p['port']}/{p['protocol']}" if p["port"] else f"any/{p['protocol']}",
        ],
    )
    return 0


def remove_policy(session: Session) -> int:
    def remove_one(policy_id: str) -> None:
        session.command("RemoveNetworkPolicy", network=session.args.network, id=policy_id)
        session.output.line(policy_id)

    return each(session.args.ids, remove_one)
