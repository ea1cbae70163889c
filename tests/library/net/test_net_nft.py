"""nftables with real traffic: NAT, published ports, isolation, internal networks, policies.

Each test applies its own uniquely named table; namespaces stand in for containers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from ipaddress import IPv4Address

import pytest
from net_lab import Bridge, NetLab
from support import REPO

from carte.net import nft
from carte.net.conntrack import forget_flows
from carte.net.ports import ANY_ADDRESS, pick_free_port
from carte.net.rules import NetworkRules, PolicyRule, PublishedPort, Ruleset
from carte.net.sysctl import enable_bridge_netfilter, enable_ip_forward, enable_route_localnet

LOOPBACK = IPv4Address("127.0.0.1")


@pytest.fixture(autouse=True)
def _forwarding() -> None:
    enable_ip_forward()


def _network(bridge: Bridge, **kw: object) -> NetworkRules:
    return NetworkRules(bridge=bridge.name, subnet=bridge.subnet, **kw)  # type: ignore[arg-type]


def _host_address() -> IPv4Address:
    """The host's own address on its uplink (read from the routing table; nothing is sent)."""
    out = subprocess.run(
        ["ip", "-j", "route", "get", "192.0.2.123"], capture_output=True, text=True, check=True
    ).stdout
    return IPv4Address(json.loads(out)[0]["prefsrc"])


def _masquerades(table: str) -> list[str]:
    """The output interfaces named in masquerade rules of `table` ("!=" marks a negation)."""
    listing = nft.list_table(table) or {}
    found = []
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if not rule or not any("masquerade" in expr for expr in rule["expr"]):
            continue
        for expr in rule["expr"]:
            match = expr.get("match")
            if match and match["left"] == {"meta": {"key": "oifname"}}:
                found.append(f"{match['op']} {match['right']}")
    return found


def test_bridge_networks_masquerade_and_internal_ones_have_no_egress(lab: NetLab) -> None:
    outside, far, host_side = lab.outside()
    lab.serve(outside, 9000, "internet")
    public, internal = lab.bridge("p"), lab.bridge("i")
    web = lab.container(public, "1")
    secret = lab.container(internal, "2")

    nft.apply(
        Ruleset(table=lab.table, networks=(_network(public), _network(internal, internal=True)))
    )

    assert lab.fetch(web.netns, far, 9000) == f"internet {host_side}"  # masqueraded
    assert lab.fetch(secret.netns, far, 9000) is None
    masq = _masquerades(lab.table)
    assert f"!= {public.name}" in masq
    assert not any(f"!= {internal.name}" in rule for rule in masq)


def test_without_carte_rules_egress_is_not_masqueraded(lab: NetLab) -> None:
    """The control for the test above: the outside world cannot answer container addresses."""
    outside, far, _ = lab.outside()
    lab.serve(outside, 9000, "internet")
    web = lab.container(lab.bridge("p"), "1")

    assert lab.fetch(web.netns, far, 9000) is None


def test_published_port_answers_on_loopback_host_address_and_to_containers(lab: NetLab) -> None:
    bridge, other = lab.bridge("a"), lab.bridge("b")
    web = lab.container(bridge, "1")
    neighbour = lab.container(bridge, "2")
    stranger = lab.container(other, "3")
    lab.serve(web.netns, 80, "web")
    lab.serve(web.netns, 53, "dns", proto="udp")
    enable_route_localnet(bridge.name)
    tcp_port, udp_port = pick_free_port(ANY_ADDRESS, "tcp"), pick_free_port(ANY_ADDRESS, "udp")
    published = (
        PublishedPort(host_port=tcp_port, container_ip=web.address, container_port=80),
        PublishedPort(host_port=udp_port, container_ip=web.address, container_port=53, proto="udp"),
    )
    nft.apply(
        Ruleset(table=lab.table, networks=(_network(bridge, published=published), _network(other)))
    )

    host = _host_address()
    # From 127.0.0.1 the source is masqueraded to the bridge's gateway.
    assert lab.fetch(None, LOOPBACK, tcp_port) == f"web {bridge.gateway}"
    assert lab.fetch(None, host, tcp_port) == f"web {host}"
    assert lab.fetch(None, LOOPBACK, udp_port, proto="udp") == f"dns {bridge.gateway}"
    # Hairpin: a container on the same bridge through the host's address.
    assert lab.fetch(neighbour.netns, host, tcp_port) == f"web {bridge.gateway}"
    # A container on another Carte network may use published ports, not the address.
    assert lab.fetch(stranger.netns, host, tcp_port) == f"web {bridge.gateway}"
    assert lab.fetch(stranger.netns, web.address, 80) is None

    nft.apply(Ruleset(table=lab.table, networks=(_network(bridge), _network(other))))
    assert lab.fetch(None, LOOPBACK, tcp_port) is None


def test_published_port_bound_to_loopback_only(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    web = lab.container(bridge, "1")
    lab.serve(web.netns, 80, "web")
    enable_route_localnet(bridge.name)
    port = pick_free_port(ANY_ADDRESS, "tcp")
    published = (
        PublishedPort(
            host_ip=LOOPBACK, host_port=port, container_ip=web.address, container_port=80
        ),
    )
    nft.apply(Ruleset(table=lab.table, networks=(_network(bridge, published=published),)))

    assert lab.fetch(None, LOOPBACK, port) == f"web {bridge.gateway}"
    assert lab.fetch(None, _host_address(), port) is None


def test_containers_cannot_reach_the_hosts_loopback_through_route_localnet(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    box = lab.container(bridge, "1")
    port = pick_free_port(ANY_ADDRESS, "tcp")
    lab.serve(None, port, "host-only")
    enable_route_localnet(bridge.name)
    nft.apply(Ruleset(table=lab.table, networks=(_network(bridge),)))
    subprocess.run(
        ["ip", "-n", box.netns, "route", "add", "127.1.0.0/16", "via", str(bridge.gateway)],
        check=True,
    )

    assert lab.fetch(None, LOOPBACK, port) == "host-only 127.0.0.1"
    assert lab.fetch(box.netns, "127.1.0.1", port) is None


def test_two_bridges_are_isolated_once_rules_apply(lab: NetLab) -> None:
    first, second = lab.bridge("a"), lab.bridge("b")
    a = lab.container(first, "1")
    b = lab.container(second, "2")
    lab.serve(b.netns, 8000, "b")
    assert lab.fetch(a.netns, b.address, 8000) == f"b {a.address}"  # plain routing works

    nft.apply(Ruleset(table=lab.table, networks=(_network(first), _network(second))))

    assert lab.fetch(a.netns, b.address, 8000) is None
    assert lab.fetch(None, b.address, 8000) == f"b {second.gateway}"  # the host still can


def test_a_policy_allows_exactly_what_it_says_and_counts_the_rest(lab: NetLab) -> None:
    enable_bridge_netfilter()
    bridge = lab.bridge("a")
    db = lab.container(bridge, "1")
    app = lab.container(bridge, "2")
    other = lab.container(bridge, "3")
    lab.serve(db.netns, 5432, "db")
    lab.serve(db.netns, 8000, "db-admin")
    allow = PolicyRule(
        sources=frozenset({app.address}), destinations=frozenset({db.address}), port=5432
    )
    network = _network(bridge, policies=(allow,), log_prefix=f"carte-deny {bridge.name}: ")
    nft.apply(Ruleset(table=lab.table, networks=(network,)))

    assert nft.denied_counts(lab.table)[bridge.name].packets == 0
    assert lab.fetch(app.netns, db.address, 5432) == f"db {app.address}"
    assert lab.fetch(app.netns, db.address, 8000) is None
    assert lab.fetch(other.netns, db.address, 5432) is None
    denied = nft.denied_counts(lab.table)[bridge.name]
    assert denied.packets >= 2
    assert denied.bytes > 0
    kernel_log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    audit = [line for line in kernel_log.splitlines() if f"carte-deny {bridge.name}: " in line]
    assert any(f"SRC={other.address} DST={db.address}" in line for line in audit)
    assert any(
        f"SRC={app.address} DST={db.address}" in line and "DPT=8000" in line for line in audit
    )

    nft.apply(Ruleset(table=lab.table, networks=(network,)))  # a rebuild keeps the count
    assert nft.denied_counts(lab.table)[bridge.name].packets >= denied.packets


def test_members_talk_freely_until_a_network_has_a_policy(lab: NetLab) -> None:
    enable_bridge_netfilter()
    bridge = lab.bridge("a")
    db, app = lab.container(bridge, "1"), lab.container(bridge, "2")
    lab.serve(db.netns, 8000, "db")
    nft.apply(Ruleset(table=lab.table, networks=(_network(bridge),)))
    assert lab.fetch(app.netns, db.address, 8000) == f"db {app.address}"

    nft.apply(Ruleset(table=lab.table, networks=(_network(bridge, isolated=True),)))
    assert lab.fetch(app.netns, db.address, 8000) is None


def _list(family: str, table: str) -> str:
    return subprocess.run(
        ["nft", "list", "table", family, table], capture_output=True, text=True, check=True
    ).stdout


def test_other_tables_survive_apply_and_teardown_byte_for_byte(lab: NetLab) -> None:
    admin = f"h8admin{lab.uid}"
    subprocess.run(
        ["nft", "-f", "-"],
        input=(
            f"table inet {admin} {{\n"
            "  set blocked { type ipv4_addr; elements = { 198.51.100.7 } }\n"
            "  chain input { type filter hook input priority 10; policy accept;\n"
            "    ip saddr @blocked counter drop\n"
            "  }\n"
            "}\n"
            f"table ip {admin} {{\n"
            "  chain postrouting { type nat hook postrouting priority 50; policy accept;\n"
            "    ip saddr 198.51.100.0/24 masquerade\n"
            "  }\n"
            "}\n"
        ),
        text=True,
        check=True,
    )
    try:
        before = _list("inet", admin), _list("ip", admin)
        bridge = lab.bridge("a")
        ruleset = Ruleset(table=lab.table, networks=(_network(bridge, isolated=True),))
        nft.apply(ruleset)
        once = _list("ip", lab.table)
        nft.apply(ruleset)
        assert _list("ip", lab.table) == once  # idempotent, no duplicates
        nft.apply(Ruleset(table=lab.table))
        assert nft.list_table(lab.table) is None  # the last network took the table along
        assert (_list("inet", admin), _list("ip", admin)) == before
    finally:
        subprocess.run(
            ["nft", "-f", "-"],
            input=f"delete table inet {admin}\ndelete table ip {admin}\n",
            text=True,
            check=False,
        )


def test_a_crash_leftover_table_is_replaced_not_duplicated(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    subprocess.run(
        ["nft", "-f", "-"],
        input=f"table ip {lab.table} {{ chain stale {{ ip saddr 203.0.113.9 drop\n }}\n}}\n",
        text=True,
        check=True,
    )
    nft.apply(Ruleset(table=lab.table, networks=(_network(bridge),)))
    listing = _list("ip", lab.table)
    assert "stale" not in listing
    assert listing.count("masquerade") == 3


def test_publishing_a_udp_port_needs_flows_that_predate_it_forgotten(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    web = lab.container(bridge, "1")
    lab.serve(web.netns, 53, "dns", proto="udp")
    enable_route_localnet(bridge.name)
    port = pick_free_port(ANY_ADDRESS, "udp")
    published = PublishedPort(
        host_port=port, container_ip=web.address, container_port=53, proto="udp"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.connect((str(LOOPBACK), port))  # one source port throughout: one flow
        client.settimeout(0.5)
        client.send(b"hi")
        with pytest.raises(ConnectionRefusedError):
            client.recv(100)

        nft.apply(Ruleset(table=lab.table, networks=(_network(bridge, published=(published,)),)))
        client.send(b"hi")
        with pytest.raises(OSError):  # the old conntrack entry still bypasses the DNAT
            client.recv(100)

        assert forget_flows(port, "udp") >= 1
        client.send(b"hi")
        assert client.recv(100).decode() == f"dns {bridge.gateway}"


def test_a_foreign_forward_drop_policy_is_reported(lab: NetLab) -> None:
    """Made in a private namespace: a drop policy on the host would cut everyone's traffic."""
    netns = lab.netns("d")
    admin = f"h8drop{lab.uid}"
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=(
            f"table ip {admin} {{\n"
            "  chain FORWARD { type filter hook forward priority 0; policy drop;\n  }\n"
            "}\n"
        ),
        text=True,
        check=True,
    )
    probe = "from carte.net import nft; print(nft.forward_drop_chains())"
    shown = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", probe],
        cwd=REPO,  # the repository root, so `carte` imports
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.strip() == str([f"ip {admin} FORWARD"])
