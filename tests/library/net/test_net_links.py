"""Bridges and veths with real namespaces: addressing, routes, MTU, reachability, cleanup."""

from __future__ import annotations

import json
import subprocess
import time
from ipaddress import IPv4Address, IPv4Interface

import pytest
from net_lab import NetLab

from carte.api.errors import Conflict, Internal, NotFound
from carte.net.sysctl import enable_ip_forward, enable_route_localnet


def _ip_json(netns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", *args], capture_output=True, text=True, check=True
    ).stdout
    result: list[dict[str, object]] = json.loads(out)
    return result


def test_container_gets_address_route_and_uplink_mtu(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    box = lab.container(bridge, "1")

    links = {link["ifname"]: link for link in _ip_json(box.netns, "link")}
    assert set(links) == {"lo", "eth0"}
    assert links["eth0"]["mtu"] == lab.mtu
    assert "UP" in links["lo"]["flags"]  # type: ignore[operator]
    assert "UP" in links["eth0"]["flags"]  # type: ignore[operator]
    addresses = _ip_json(box.netns, "-4", "addr", "show", "eth0")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addresses] == [  # type: ignore[attr-defined]
        (str(box.address), bridge.subnet.prefixlen)
    ]
    routes = _ip_json(box.netns, "route", "show", "default")
    assert routes[0]["gateway"] == str(bridge.gateway)


def test_two_namespaces_on_one_bridge_talk_tcp_and_udp(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    web = lab.container(bridge, "1")
    client = lab.container(bridge, "2")
    lab.serve(web.netns, 8000, "web")
    lab.serve(web.netns, 8053, "dns", proto="udp")

    assert lab.fetch(client.netns, web.address, 8000) == f"web {client.address}"
    assert lab.fetch(client.netns, web.address, 8053, proto="udp") == f"dns {client.address}"


def test_the_host_reaches_a_container_through_the_gateway(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    web = lab.container(bridge, "1")
    lab.serve(web.netns, 8000, "web")

    assert lab.fetch(None, web.address, 8000) == f"web {bridge.gateway}"


def test_ensure_bridge_is_idempotent_and_refuses_a_non_bridge(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    gateway = f"{bridge.gateway}/{bridge.subnet.prefixlen}"
    assert lab.links.ensure_bridge(bridge.name, IPv4Interface(gateway), lab.mtu) is False
    box = lab.container(bridge, "1")
    with pytest.raises(Conflict, match="is not a bridge"):
        lab.links.ensure_bridge(lab.link_name("v", "1"), IPv4Interface(gateway), lab.mtu)
    assert box.address not in (bridge.gateway,)


def test_ensure_bridge_replaces_an_address_left_from_an_earlier_subnet(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    moved = lab.free_subnet()
    gateway = IPv4Interface(f"{moved.network_address + 1}/{moved.prefixlen}")
    vip = f"{moved.network_address + 200}/32"  # a service VIP, as a restarting daemon finds it
    subprocess.run(["ip", "address", "add", vip, "dev", bridge.name], check=True)

    lab.links.ensure_bridge(bridge.name, gateway, lab.mtu)

    shown = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "dev", bridge.name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    addresses = [f"{a['local']}/{a['prefixlen']}" for a in json.loads(shown)[0]["addr_info"]]
    assert sorted(addresses) == sorted([str(gateway), vip])  # the VIP stays: its owner keeps it


def test_connect_to_a_missing_namespace_leaves_nothing_behind(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    host_ifname = lab.link_name("v", "x")
    with pytest.raises(NotFound, match="cannot be opened"):
        lab.connect(f"carte-t-{lab.uid}-missing", bridge, host_ifname, bridge.gateway + 1)
    assert lab.links.index_of(host_ifname) is None


def test_a_taken_interface_name_in_the_namespace_is_a_conflict_and_cleaned(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    box = lab.container(bridge, "1")
    host_ifname = lab.link_name("v", "y")
    with pytest.raises(Conflict, match="already exists"):
        lab.connect(box.netns, bridge, host_ifname, bridge.gateway + 9)
    assert lab.links.index_of(host_ifname) is None


def test_ports_of_a_bridge_are_its_containers_host_ends(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    lab.container(bridge, "1")
    lab.container(bridge, "2")

    assert lab.links.ports_of(bridge.name) == [lab.link_name("v", "1"), lab.link_name("v", "2")]
    assert lab.links.ports_of(lab.link_name("b", "gone")) == []


def test_deleting_links_is_idempotent(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    lab.container(bridge, "1")
    host_ifname = lab.link_name("v", "1")

    assert lab.links.delete_link(host_ifname) is True
    assert lab.links.delete_link(host_ifname) is False
    assert lab.links.delete_link(bridge.name) is True
    assert lab.links.delete_link(bridge.name) is False


def test_a_namespace_given_by_pid_is_connected(lab: NetLab) -> None:
    """The daemon passes the container's pid; here `unshare -n` holds a fresh namespace."""
    bridge = lab.bridge("a")
    holder = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "echo up; exec sleep 60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "up"
        host_ifname = lab.link_name("v", "p")
        address = IPv4Interface(f"{bridge.allocator.allocate()}/{bridge.subnet.prefixlen}")
        endpoint = lab.connect(holder.pid, bridge, host_ifname, address.ip)
        shown = subprocess.run(
            ["nsenter", "-t", str(holder.pid), "-n", "ip", "-4", "-br", "addr", "show", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert str(address) in shown
        assert endpoint.mac == "02:42:" + ":".join(f"{b:02x}" for b in address.ip.packed)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # The namespace dies with its last process and takes the veth pair along; the kernel
    # tears namespaces down asynchronously, so wait for it.
    deadline = time.monotonic() + 10
    while lab.links.index_of(host_ifname) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lab.links.delete_link(host_ifname) is False


def test_kernel_switches_report_whether_they_changed_anything(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    path = f"/proc/sys/net/ipv4/conf/{bridge.name}/route_localnet"
    with open(path) as before:
        assert before.read().strip() == "0"
    assert enable_route_localnet(bridge.name) is True
    assert enable_route_localnet(bridge.name) is False
    with open(path) as after:
        assert after.read().strip() == "1"
    enable_ip_forward()
    assert enable_ip_forward() is False


def test_a_failure_inside_the_namespace_removes_the_pair(lab: NetLab) -> None:
    bridge = lab.bridge("a")
    netns = lab.netns("f")
    host_ifname = lab.link_name("v", "f")
    unreachable = IPv4Address("192.0.2.254")  # not on the container's subnet

    with pytest.raises(Internal, match=r"cannot add a default route via 192\.0\.2\.254"):
        lab.connect(netns, bridge, host_ifname, bridge.gateway + 5, unreachable)
    assert lab.links.index_of(host_ifname) is None
    links = subprocess.run(
        ["ip", "-n", netns, "-br", "link"], capture_output=True, text=True, check=True
    ).stdout
    assert "eth0" not in links
