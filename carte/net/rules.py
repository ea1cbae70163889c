"""The desired state of Carte's packet filtering, and its rendering as one nftables table.

Everything Carte needs lives in a single ``table ip <name>`` (the name is per daemon, so
several daemons can run side by side):

* ``guard`` (prerouting, raw): drops 127.0.0.0/8 destinations arriving from a Carte bridge,
  since bridges get route_localnet=1 for loopback port publishing; and exempts traffic
  between members of a network without policies from connection tracking (when its
  `gateway` is given): br_netfilter would otherwise track every bridged packet. Local
  destinations (the gateway, service VIPs on the bridge) stay tracked: they may be DNATed.
* ``prerouting``/``output`` (nat): packets to a local address jump to ``publish``, which
  DNATs published ports to containers; the output hook makes 127.0.0.1 and the host's own
  addresses work from the host itself.
* ``postrouting`` (nat): masquerade for non-internal networks leaving their bridge, for
  127.0.0.0/8 sources sent into a bridge, and for hairpin (a container reaching a published
  port that lands on its own bridge).
* ``forward`` (filter): policies between members of one bridge (seen thanks to
  br_netfilter), no traffic across the boundary of an internal network, no traffic
  between different Carte bridges except to published ports, and, as Docker does, nothing
  forwarded into a bridge from elsewhere (a LAN neighbour routing the subnet through the
  host) unless it belongs to a flow already allowed or was DNATed to a published port.

`render` is pure; `carte.net.nft` applies the text atomically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from carte.api.errors import Conflict, InvalidArgument
from carte.net.ports import ANY_ADDRESS, Protocol

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_LOG_PREFIX = re.compile(r'^[^"\\\n]{1,60}$')


@dataclass(frozen=True)
class PublishedPort:
    """``host_ip:host_port/proto`` forwarded to ``container_ip:container_port``."""

    host_port: int
    container_ip: IPv4Address
    container_port: int
    proto: Protocol = "tcp"
    host_ip: IPv4Address = ANY_ADDRESS


@dataclass(frozen=True)
class PolicyRule:
    """Allow `sources` to reach `destinations`, on `port`/`proto` (None: any port/protocol)."""

    sources: frozenset[IPv4Address]
    destinations: frozenset[IPv4Address]
    port: int | None = None
    proto: Protocol = "tcp"


@dataclass(frozen=True)
class NetworkRules:
    """One Carte network as the packet filter sees it.

    Once `policies` is non-empty (or `isolated` is set) traffic between members of the
    network is denied except what a rule allows; denied packets are counted in the named
    counter ``denied_<bridge>`` and logged with `log_prefix` when given.
    """

    bridge: str
    subnet: IPv4Network
    internal: bool = False
    published: tuple[PublishedPort, ...] = ()
    policies: tuple[PolicyRule, ...] = ()
    isolated: bool = False
    log_prefix: str | None = None
    gateway: IPv4Address | None = None
    """The bridge's own address; when set (and no policy), member-to-member traffic is not
    tracked. Flows to the host's own addresses (gateway, VIPs) stay tracked for DNAT."""

    @property
    def has_policy(self) -> bool:
        return self.isolated or bool(self.policies)


@dataclass(frozen=True)
class Ruleset:
    """Every Carte network of one daemon; the table is named `table`."""

    table: str
    networks: tuple[NetworkRules, ...] = ()
    denied_counts: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Counter values (packets, bytes) to carry over a rebuild, keyed by bridge."""


def denied_counter_name(bridge: str) -> str:
    return f"denied_{bridge}"


def check_table_name(table: str) -> None:
    """Raise `InvalidArgument` unless nft can take `table` as a table name."""
    if not _NAME.match(table):
        raise InvalidArgument(
            f'nftables table name "{table}" is invalid; use letters, digits, - and _'
        )


def validate(ruleset: Ruleset) -> None:
    """Raise `InvalidArgument`/`Conflict` for names nft cannot take or clashing host ports."""
    check_table_name(ruleset.table)
    taken: dict[tuple[int, str], list[IPv4Address]] = {}
    for network in ruleset.networks:
        if not _NAME.match(network.bridge):
            raise InvalidArgument(
                f'bridge name "{network.bridge}" is invalid; use letters, digits, - and _'
            )
        if network.log_prefix is not None and not _LOG_PREFIX.match(network.log_prefix):
            raise InvalidArgument(
                f'log prefix "{network.log_prefix}" is invalid; use 1-60 characters '
                "without quotes or backslashes"
            )
        for port in network.published:
            holders = taken.setdefault((port.host_port, port.proto), [])
            if holders and (
                port.host_ip == ANY_ADDRESS or ANY_ADDRESS in holders or port.host_ip in holders
            ):
                raise Conflict(
                    f"host port {port.host_ip}:{port.host_port}/{port.proto} is already "
                    "published by another container; choose another host port"
                )
            holders.append(port.host_ip)


def _addresses(addresses: frozenset[IPv4Address]) -> str:
    return "{ " + ", ".join(str(a) for a in sorted(addresses)) + " }"


def _quoted(names: list[str]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


def _publish_rules(networks: tuple[NetworkRules, ...]) -> list[str]:
    lines = []
    for network in networks:
        if network.internal:
            continue
        for port in network.published:
            match_ip = "" if port.host_ip == ANY_ADDRESS else f"ip daddr {port.host_ip} "
            lines.append(
                f"{match_ip}{port.proto} dport {port.host_port} "
                f"dnat to {port.container_ip}:{port.container_port}"
            )
    return lines


def _policy_chain(network: NetworkRules) -> list[str]:
    # Published ports are public: hairpin traffic to them is not a member-to-member flow.
    lines = ["ct state established,related accept", "ct status dnat accept"]
    for rule in network.policies:
        if not rule.sources or not rule.destinations:
            continue  # a selector matching no container allows nothing
        match = f"ip saddr {_addresses(rule.sources)} ip daddr {_addresses(rule.destinations)}"
        if rule.port is not None:
            match += f" {rule.proto} dport {rule.port}"
        lines.append(f"{match} accept")
    log = f' log prefix "{network.log_prefix}"' if network.log_prefix else ""
    lines.append(f"counter name {denied_counter_name(network.bridge)}{log} drop")
    return lines


def _forward_rules(networks: tuple[NetworkRules, ...]) -> list[str]:
    lines = []
    bridges = [n.bridge for n in networks]
    for network in networks:
        br = f'"{network.bridge}"'
        if network.has_policy:
            lines.append(f"iifname {br} oifname {br} jump policy_{network.bridge}")
        if network.internal:
            lines.append(f"iifname {br} oifname != {br} drop")
            lines.append(f"oifname {br} iifname != {br} drop")
    if len(bridges) > 1:
        lines.append("ct status dnat accept")
        for network in networks:
            others = [b for b in bridges if b != network.bridge]
            lines.append(f'iifname "{network.bridge}" oifname {_quoted(others)} drop')
    for network in networks:
        if network.internal:
            continue  # dropped both ways above
        inbound = f'oifname "{network.bridge}" iifname != "{network.bridge}"'
        lines.append(f"{inbound} ct state established,related accept")
        lines.append(f"{inbound} ct status dnat accept")
        lines.append(f"{inbound} drop")
    return lines


def _postrouting_rules(networks: tuple[NetworkRules, ...]) -> list[str]:
    lines = []
    for network in networks:
        br = f'"{network.bridge}"'
        lines.append(f"oifname {br} ip saddr 127.0.0.0/8 masquerade")
        if not network.internal:
            lines.append(f"ip saddr {network.subnet} oifname != {br} masquerade")
            lines.append(f"oifname {br} ip saddr {network.subnet} ct status dnat masquerade")
    return lines


def chain(name: str, hook: str | None, rules: list[str]) -> list[str]:
    """The lines of chain `name`: a base chain on `hook` (policy accept), else a regular one."""
    out = [f"  chain {name} {{"]
    if hook:
        out.append(f"    {hook}; policy accept;")
    out += [f"    {rule}" for rule in rules]
    out.append("  }")
    return out


def render(ruleset: Ruleset) -> str:
    """The nft script that replaces table ``ip <table>`` with exactly `ruleset`, atomically.

    Declaring then deleting the table first makes the script work whether or not the table
    exists, and since ``nft -f`` runs it as one transaction there is never a moment with a
    half-built table, nor anything left over from an earlier state. Raises as `validate`.
    """
    validate(ruleset)
    networks = ruleset.networks
    table = ruleset.table
    out = [f"table ip {table}", f"delete table ip {table}", f"table ip {table} {{"]
    for network in networks:
        if network.has_policy:
            packets, size = ruleset.denied_counts.get(network.bridge, (0, 0))
            out.append(
                f"  counter {denied_counter_name(network.bridge)} "
                f"{{ packets {packets} bytes {size} }}"
            )
    guard = [f'iifname "{n.bridge}" ip daddr 127.0.0.0/8 drop' for n in networks]
    guard += [
        f'iifname "{n.bridge}" ip daddr {n.subnet} fib daddr type != local notrack'
        for n in networks
        if n.gateway is not None and not n.has_policy
    ]
    out += chain("guard", "type filter hook prerouting priority raw", guard)
    out += chain("publish", None, _publish_rules(networks))
    local = ["fib daddr type local jump publish"]
    out += chain("prerouting", "type nat hook prerouting priority dstnat", local)
    out += chain("output", "type nat hook output priority -100", local)
    out += chain(
        "postrouting", "type nat hook postrouting priority srcnat", _postrouting_rules(networks)
    )
    for network in networks:
        if network.has_policy:
            out += chain(f"policy_{network.bridge}", None, _policy_chain(network))
    out += chain("forward", "type filter hook forward priority filter", _forward_rules(networks))
    out.append("}")
    return "\n".join(out) + "\n"


def render_delete(table: str) -> str:
    """The nft script that removes table ``ip <table>`` whether or not it exists."""
    check_table_name(table)
    return f"table ip {table}\ndelete table ip {table}\n"
