"""The default network keeps the network it was given (issue 11, item 13): when another bridge
takes its subnet between two runs (Docker installed after Carte), the idle default network
moves, and its bridge address, routes, NAT and records move together; a network with
endpoints is never re-addressed."""

from __future__ import annotations

import json
import secrets
import subprocess
from ipaddress import IPv4Interface, IPv4Network

from networks_lab import host_fetch, network, serve_http
from support.containers import ok
from support.daemon import Daemon

from carte.net.ports import ANY_ADDRESS, pick_free_port


def bridge_addresses(bridge: str) -> list[str]:
    shown = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True
    )
    links = json.loads(shown.stdout or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]]


def add_rogue_bridge(name: str, subnet: IPv4Network) -> None:
    """What dockerd does with docker0: a bridge addressed inside `subnet`."""
    address = f"{subnet.network_address + 200}/{subnet.prefixlen}"
    for command in (
        ["ip", "link", "add", name, "type", "bridge"],
        ["ip", "addr", "add", address, "dev", name],
        ["ip", "link", "set", name, "up"],
    ):
        subprocess.run(command, check=True)


def default_route_inside(carte: Daemon, container: str) -> str:
    routes = ok(carte.client("exec", container, "ip", "route"))
    return next(line.split()[2] for line in routes.splitlines() if line.startswith("default"))


def test_a_bridge_taking_the_idle_default_subnet_moves_it_whole(carte: Daemon) -> None:
    ok(carte.client("run", "--rm", "busybox", "true"))  # the default bridge now exists, idle
    before = network(carte, "bridge")
    ok(carte.client("run", "--rm", "busybox", "true"))  # its own bridge is no conflict
    assert network(carte, "bridge")["subnet"] == before["subnet"]
    rogue, second = f"ctr{secrets.token_hex(4)}", f"ctr{secrets.token_hex(4)}"
    add_rogue_bridge(rogue, IPv4Network(before["subnet"]))
    try:
        port = pick_free_port(ANY_ADDRESS, "tcp")
        web = serve_http(carte, "web", "-p", f"127.0.0.1:{port}:80")
        after = network(carte, "bridge")
        moved = IPv4Network(after["subnet"])
        assert not moved.overlaps(IPv4Network(before["subnet"]))
        gateway = IPv4Interface(f"{after['gateway']}/{moved.prefixlen}")
        assert bridge_addresses(after["bridge"]) == [str(gateway)]
        assert default_route_inside(carte, web) == after["gateway"]
        assert host_fetch("127.0.0.1", port).endswith(web[:12] + "\n")  # NAT moved too
        ok(carte.client("exec", web, "nslookup", "web"))  # and DNS listens on the new gateway

        # With a member, the network stays where it is, whatever appears on the host.
        add_rogue_bridge(second, moved)
        ok(carte.client("run", "--rm", "busybox", "true"))
        assert network(carte, "bridge")["subnet"] == after["subnet"]
        assert bridge_addresses(after["bridge"]) == [str(gateway)]
    finally:
        for name in (rogue, second):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def test_rotating_keys_outside_a_cluster_says_where_encryption_applies(carte: Daemon) -> None:
    refused = carte.client("network", "rotate-keys")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "carte: this daemon is not in a cluster: encrypted networks are carried between a "
        "cluster's nodes (carte cluster init, carte node join)"
    )


def test_docker_swarms_overlay_driver_is_taken_and_others_are_refused(carte: Daemon) -> None:
    made = carte.client("network", "create", "-d", "overlay", "swarmish")
    try:
        assert made.returncode == 0, made.stderr
        assert "swarmish" in carte.client("network", "ls").stdout
    finally:
        carte.client("network", "rm", "swarmish")
    refused = carte.client("network", "create", "-d", "macvlan", "other")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        'carte: network driver "macvlan" is unknown; use bridge or overlay'
    )
    assert "other" not in carte.client("network", "ls").stdout
