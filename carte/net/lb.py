"""Service load balancing in the kernel: virtual IPs DNATed to ready replicas by nftables.

Each daemon keeps one ``table ip <name>`` of its own next to the network table (the network
handler rebuilds its table whole, so service rules live apart and neither rebuild touches the
other). For every service:

* ``VIP:port`` (TCP, from containers and from the host) is DNATed to one of the ready
  replicas chosen per connection by ``numgen random mod N``; conntrack keeps each existing
  flow on the replica it started on.
* published ports (``host:port`` on any local address) are balanced the same way to the
  replicas' container port.
* any other TCP/UDP port of the VIP goes to the same port of a replica (a Compose service
  name reaches every port its containers listen on, declared or not).
* a VIP with no ready replica is refused with a TCP reset (ICMP unreachable for other
  protocols) instead of hanging.
* connections to a VIP are masqueraded, so a replica answers through the host even when the
  client sits on the same bridge or is the replica itself (hairpin).

The VIP needs no interface: `assign_vip` adds it as a /32 on the stack network's bridge, so
the host answers ARP for it and owns it as a local address; `enable_hairpin` lets a replica
reach itself through the VIP. `render` is pure; `apply` and
`delete` run ``nft -f -`` (one transaction: never a half-built table). Failures raise
`Unavailable` (no nft/ip binary) or `Internal` (the command refused, with its first error line).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from carte.api.errors import Internal, Unavailable
from carte.net.ports import Protocol
from carte.net.rules import chain, check_table_name, render_delete

MESH_MARK = "0x4f56"
"""Connection mark of published-port connections in a table with SNAT `sources`."""


@dataclass(frozen=True)
class ServicePort:
    """Traffic to `port`/`proto` goes to the replicas' `target_port`; `published` means the port
    is a host port (any local address) rather than a port of the VIP."""

    port: int
    target_port: int
    proto: Protocol = "tcp"
    published: bool = False
    host_ip: str = ""
    """For a published port: the one local address it is bound to ("" = every one)."""


@dataclass(frozen=True)
class BalancedService:
    """One service as the packet filter sees it: its VIP, ports and ready replicas."""

    name: str
    vip: IPv4Address
    ports: tuple[ServicePort, ...] = ()
    backends: tuple[IPv4Address, ...] = ()


def _target_map(backends: tuple[IPv4Address, ...], port: int | None) -> str:
    suffix = "" if port is None else f" . {port}"
    entries = ", ".join(f"{i} : {ip}{suffix}" for i, ip in enumerate(backends))
    return f"numgen random mod {len(backends)} map {{ {entries} }}"


def _service_rules(service: BalancedService, mark: str = "") -> list[str]:
    """`mark`: set on connections to published ports (so they can be SNATed)."""
    lines = []
    backends = tuple(sorted(service.backends))
    for port in service.ports:
        if port.published:
            where = f"ip daddr {port.host_ip}" if port.host_ip else "fib daddr type local"
            match = f"{where} {port.proto} dport {port.port}"
        else:
            match = f"ip daddr {service.vip} {port.proto} dport {port.port}"
        if not backends:
            continue  # unmatched VIP traffic is refused in `input`; published ports find no one
        if port.published and mark:
            match += f" ct mark set {mark}"
        if port.published or port.port != port.target_port:
            lines.append(f"{match} dnat ip to {_target_map(backends, port.target_port)}")
        else:
            lines.append(f"{match} dnat ip to {_target_map(backends, None)}")
    if backends:
        # any other port of the VIP reaches the same port of a replica, as a Compose service
        # name reaches every port its containers listen on (the images' own EXPOSE unknown)
        lines.append(
            f"ip daddr {service.vip} meta l4proto {{ tcp, udp }} "
            f"dnat ip to {_target_map(backends, None)}"
        )
    return lines


def render(
    table: str,
    services: list[BalancedService],
    *,
    sources: Mapping[str, IPv4Address] | None = None,
    before: int = 10,
) -> str:
    """The nft script replacing table ``ip <table>`` with exactly `services`, atomically.

    `sources` (bridge -> address): connections to a VIP or a published port leaving
    through that bridge are SNATed to that address instead of masqueraded (an overlay
    network's bridges share their gateway address across nodes, so replies must come back
    to a per-node one).
    `before`: how far ahead of the network table's NAT chains this table's run (a table
    with a larger value wins the NAT of a connection both match).
    Raises `InvalidArgument` for a table name nft cannot take."""
    check_table_name(table)
    out = [f"table ip {table}", f"delete table ip {table}", f"table ip {table} {{"]
    vips = sorted({s.vip for s in services})
    elements = f" elements = {{ {', '.join(str(v) for v in vips)} }};" if vips else ""
    out.append(f"  set vips {{ type ipv4_addr;{elements} }}")
    mark = MESH_MARK if sources else ""
    rules = [
        rule
        for service in sorted(services, key=lambda s: s.name)
        for rule in _service_rules(service, mark)
    ]
    out += chain("services", None, rules)
    # Before the network table's own DNAT (priority dstnat), so a VIP is never its concern.
    prerouting = f"type nat hook prerouting priority dstnat - {before}"
    out += chain("prerouting", prerouting, ["jump services"])
    out += chain("output", f"type nat hook output priority {-100 - before}", ["jump services"])
    snat = []
    for bridge, address in sorted((sources or {}).items()):
        snat.append(f'ct original ip daddr @vips oifname "{bridge}" snat ip to {address}')
        snat.append(f'ct mark {MESH_MARK} oifname "{bridge}" snat ip to {address}')
    out += chain(
        "postrouting",
        f"type nat hook postrouting priority srcnat - {before}",
        [*snat, "ct original ip daddr @vips masquerade"],
    )
    # Replies to the host's own VIP connections arrive here with the VIP as destination.
    refuse = [
        "ct state established,related accept",
        "ip daddr @vips meta l4proto tcp reject with tcp reset",
        "ip daddr @vips reject",
    ]
    out += chain("input", "type filter hook input priority filter", refuse)
    out.append("}")
    return "\n".join(out) + "\n"


def _run(binary_name: str, args: list[str], script: str | None = None) -> None:
    binary = shutil.which(binary_name)
    if binary is None:
        raise Unavailable(f"the {binary_name} command is not installed; install it")
    done = subprocess.run(
        [binary, *args], input=script, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        first = next((ln for ln in done.stderr.splitlines() if ln.strip()), "unknown error")
        raise Internal(f"{binary_name} {' '.join(args)} failed: {first.strip()}")


def apply(table: str, services: list[BalancedService]) -> None:
    """Make table ``ip <table>`` exactly `services`; delete it when there are none."""
    if not services:
        delete(table)
        return
    apply_script(render(table, services))


def apply_script(script: str) -> None:
    """Run a script of `render` (one transaction)."""
    _run("nft", ["-f", "-"], script)


def delete(table: str) -> None:
    """Remove table ``ip <table>`` if it exists."""
    _run("nft", ["-f", "-"], render_delete(table))


def enable_hairpin(bridge: str) -> None:
    """Turn on hairpin mode on every port of `bridge`, so a replica can reach itself via the VIP.

    With br_netfilter loaded, a packet DNATed back to the port it came in on is re-sent as a
    bridged frame, and the bridge never sends a frame out of its ingress port unless that
    port is in hairpin mode (what Kubernetes' kubenet does for the same reason). A port that
    vanishes meanwhile is skipped; raises `Internal` when sysfs refuses the write."""
    ports = Path("/sys/class/net") / bridge / "brif"
    try:
        names = [p.name for p in ports.iterdir()]
    except FileNotFoundError:
        return
    for name in names:
        flag = ports / name / "hairpin_mode"
        try:
            if flag.read_text().strip() != "1":
                flag.write_text("1")
        except FileNotFoundError:
            continue  # the port left the bridge meanwhile
        except OSError as error:
            raise Internal(f"hairpin mode on {bridge} port {name}: {error.strerror}") from None


def assign_vip(bridge: str, vip: IPv4Address) -> None:
    """Add `vip`/32 to `bridge` (idempotent), so the host answers ARP for it."""
    _run("ip", ["-4", "address", "replace", f"{vip}/32", "dev", bridge])


def release_vip(bridge: str, vip: IPv4Address) -> None:
    """Remove `vip`/32 from `bridge`; nothing happens when it or the bridge is gone."""
    try:
        _run("ip", ["-4", "address", "del", f"{vip}/32", "dev", bridge])
    except Internal:
        pass  # already gone (bridge removed with its network, or released before)


def forget_neighbour(bridge: str, address: IPv4Address) -> None:
    """Drop the host's neighbour (ARP) entry for `address` on `bridge`, so a new holder of the
    address is looked up at once and a gone one fails fast; nothing happens when there is none."""
    try:
        _run("ip", ["-4", "neigh", "del", str(address), "dev", bridge])
    except Internal:
        pass  # no entry (never talked to, or already gone with its veth)
