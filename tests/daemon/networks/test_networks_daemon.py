"""Networks through the CLI against a real daemon: real bridges, veths, nftables, DNS."""

from __future__ import annotations

import json
import socket
import subprocess

from networks_lab import (
    bridge_ports,
    fails,
    fetch_from,
    host_fetch,
    network,
    ok,
    serve_http,
    wait_until,
)
from support.daemon import Daemon


def test_two_containers_on_one_network_fetch_a_page_by_name(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n1web"))
    web = serve_http(carte, "web", "--network", "n1web", "--network-alias", "site")
    assert fetch_from(carte, "web", "--network", "n1web").endswith(web[:12] + "\n")
    assert fetch_from(carte, "site", "--network", "n1web").endswith(web[:12] + "\n")
    members = {m["name"]: m for m in network(carte, "n1web")["containers"]}
    assert list(members) == ["web"]
    assert members["web"]["ip_address"].startswith("10.77.")


def test_container_files_point_at_the_network(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n1files"))
    gateway = network(carte, "n1files")["gateway"]
    out = ok(
        carte.client(
            "run",
            "--rm",
            "--network",
            "n1files",
            "--hostname",
            "box",
            "busybox",
            "sh",
            "-c",
            "cat /etc/resolv.conf /etc/hostname; ip -o -4 addr show eth0; ip route",
        )
    )
    assert f"nameserver {gateway}" in out
    assert "box" in out.split()
    assert f"default via {gateway}" in out


def test_dns_answers_nxdomain_for_unknown_names_and_servfail_without_upstream(
    carte: Daemon,
) -> None:
    ok(carte.client("network", "create", "n1dns"))
    serve_http(carte, "named", "--network", "n1dns")
    script = (
        "nslookup named; echo rc=$?; nslookup nosuchbox; echo rc=$?; "
        "nslookup example.invalid; echo rc=$?"
    )
    out = ok(carte.client("run", "--rm", "--network", "n1dns", "busybox", "sh", "-c", script))
    codes = [line for line in out.splitlines() if line.startswith("rc=")]
    assert codes == ["rc=0", "rc=1", "rc=1"], out
    assert "NXDOMAIN" in out
    assert "SERVFAIL" in out
    assert "timed out" not in out


def test_published_port_answers_on_loopback_and_random_port(carte: Daemon) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = serve_http(carte, "pub", "-p", f"127.0.0.1:{port}:80", "-p", "80")
    assert host_fetch("127.0.0.1", port).endswith(web[:12] + "\n")
    details = json.loads(ok(carte.client("inspect", "pub")))[0]
    ports = details["endpoints"][0]["ports"]
    random_port = next(p["host_port"] for p in ports if p["host_port"] != port)
    assert random_port > 0
    assert host_fetch("127.0.0.1", random_port).endswith(web[:12] + "\n")
    gateway = network(carte, "bridge")["gateway"]  # one of the host's own addresses
    assert fetch_from(carte, gateway, port=random_port).endswith(web[:12] + "\n")  # hairpin
    ok(carte.client("network", "create", "n1elsewhere"))
    assert fetch_from(carte, gateway, "--network", "n1elsewhere", port=random_port).endswith(
        web[:12] + "\n"
    )


def test_a_taken_host_port_is_refused_before_anything_is_made(carte: Daemon) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        error = fails(
            carte.client("run", "-d", "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "60")
        )
    assert str(port) in error
    assert network(carte, "bridge")["containers"] == []


def test_network_none_has_only_loopback(carte: Daemon) -> None:
    out = ok(carte.client("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link"))
    names = [line.split(":")[1].strip() for line in out.splitlines()]
    assert names == ["lo"]


def test_separate_networks_are_isolated(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n1left"))
    ok(carte.client("network", "create", "n1right"))
    web = serve_http(carte, "right", "--network", "n1right")
    address = network(carte, "n1right")["containers"][0]["ip_address"]
    assert fetch_from(carte, address, "--network", "n1right").endswith(web[:12] + "\n")
    assert fetch_from(carte, address, "--network", "n1left") == ""
    assert fetch_from(carte, "right", "--network", "n1left") == ""  # not even its name


def test_connect_and_disconnect_a_running_container(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n1first"))
    ok(carte.client("network", "create", "n1second"))
    web = serve_http(carte, "both", "--network", "n1first")
    ok(carte.client("network", "connect", "--alias", "second-name", "n1second", "both"))
    assert fetch_from(carte, "second-name", "--network", "n1second").endswith(web[:12] + "\n")
    member = network(carte, "n1second")["containers"][0]
    shown = _networks_of(carte, "both")  # inspect lists the joined network, as Docker does
    assert sorted(shown) == ["n1first", "n1second"]
    assert shown["n1second"]["IPAddress"] == member["ip_address"]
    assert shown["n1second"]["MacAddress"] == member["mac_address"]
    assert shown["n1second"]["Aliases"] == ["second-name"]
    error = fails(carte.client("network", "rm", "n1second"))
    assert "n1second" in error and "both" in error
    ok(carte.client("network", "disconnect", "n1second", "both"))
    assert fetch_from(carte, "second-name", "--network", "n1second") == ""
    assert list(_networks_of(carte, "both")) == ["n1first"]
    ok(carte.client("network", "rm", "n1second"))


def test_no_veth_is_left_once_run_rm_stop_or_rm_returned(carte: Daemon) -> None:
    """The network handler deletes a stopped container's veth pair after answering its
    detach (off the exit's path); the commands still return only once it is gone, and a
    restart gets its interface back."""
    ok(carte.client("network", "create", "n1unplug"))
    bridge = network(carte, "n1unplug")["bridge"]
    for _ in range(3):
        ok(carte.client("run", "--rm", "--network", "n1unplug", "busybox", "true"))
        assert bridge_ports(bridge) == []
    ok(carte.client("run", "-d", "--name", "unplugged", "--network", "n1unplug",
                    "busybox", "sleep", "600"))  # fmt: skip
    assert len(bridge_ports(bridge)) == 1
    ok(carte.client("stop", "-t", "0", "unplugged"))
    assert bridge_ports(bridge) == []
    ok(carte.client("start", "unplugged"))
    out = ok(carte.client("exec", "unplugged", "ip", "-o", "-4", "addr", "show", "eth0"))
    assert network(carte, "n1unplug")["containers"][0]["ip_address"] in out
    ok(carte.client("rm", "-f", "unplugged"))
    assert bridge_ports(bridge) == []
    assert network(carte, "n1unplug")["containers"] == []


def test_a_connected_network_is_joined_again_at_each_start(carte: Daemon) -> None:
    """Docker's rule: `network connect` lasts until `network disconnect`, across stops and
    restarts, and a stopped container can be connected (it joins at its next start)."""
    ok(carte.client("network", "create", "n1home"))
    ok(carte.client("network", "create", "n1extra"))
    web = serve_http(carte, "kept", "--network", "n1home")
    ok(carte.client("network", "connect", "--alias", "kept-extra", "n1extra", "kept"))
    ok(carte.client("restart", "-t", "1", "kept"))
    assert sorted(_networks_of(carte, "kept")) == ["n1extra", "n1home"]
    wait_until(lambda: fetch_from(carte, "kept-extra", "--network", "n1extra") != "")
    assert fetch_from(carte, "kept-extra", "--network", "n1extra").endswith(web[:12] + "\n")
    ok(carte.client("stop", "-t", "1", "kept"))
    ok(carte.client("network", "disconnect", "n1extra", "kept"))  # stopped: forgotten
    ok(carte.client("start", "kept"))
    assert list(_networks_of(carte, "kept")) == ["n1home"]
    ok(carte.client("stop", "-t", "1", "kept"))
    ok(carte.client("network", "connect", "--alias", "late", "n1extra", "kept"))
    again = fails(carte.client("network", "connect", "n1extra", "kept"))
    assert "already connected" in again
    ok(carte.client("start", "kept"))
    assert sorted(_networks_of(carte, "kept")) == ["n1extra", "n1home"]
    wait_until(lambda: fetch_from(carte, "late", "--network", "n1extra") != "")
    ok(carte.client("stop", "-t", "1", "kept"))
    ok(carte.client("network", "rm", "n1extra"))  # no running member: removable
    ok(carte.client("start", "kept"))  # the removed network is left out, not a failed start
    assert list(_networks_of(carte, "kept")) == ["n1home"]
    ok(carte.client("rm", "-f", "kept"))
    ok(carte.client("network", "rm", "n1home"))
    ok(carte.client("create", "--name", "cold", "busybox", "true"))  # on the default network
    assert "already connected" in fails(carte.client("network", "connect", "bridge", "cold"))
    ok(carte.client("rm", "cold"))


def _networks_of(carte: Daemon, container: str) -> dict[str, dict[str, object]]:
    shown: dict[str, dict[str, object]] = json.loads(
        ok(carte.client("inspect", "-f", "{{json .NetworkSettings.Networks}}", container))
    )
    return shown


def test_bad_input_is_one_line_naming_the_value(carte: Daemon) -> None:
    ok(carte.client("network", "create", "--subnet", "10.77.250.0/24", "n1bad"))
    assert "10.77.250.0/25" in fails(
        carte.client("network", "create", "--subnet", "10.77.250.0/25", "n1other")
    )
    assert "n1bad" in fails(carte.client("network", "create", "n1bad"))
    assert "10.78.0.9" in fails(
        carte.client(
            "network", "create", "--subnet", "10.78.0.0/24", "--gateway", "10.78.0.9x", "n1gw"
        )
    )
    assert "10.99.0.5" in fails(
        carte.client("run", "-d", "--network", "n1bad", "--ip", "10.99.0.5", "busybox", "true")
    )
    assert "80:abc" in fails(carte.client("run", "--rm", "-p", "80:abc", "busybox", "true"))
    assert "nosuchnet" in fails(carte.client("network", "inspect", "nosuchnet"))
    names = ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()
    assert "n1other" not in names and "n1gw" not in names
    assert network(carte, "n1bad")["containers"] == []


def test_ip_is_honoured_and_not_given_twice(carte: Daemon) -> None:
    ok(carte.client("network", "create", "--subnet", "10.77.251.0/24", "n1fixed"))
    serve_http(carte, "fixed", "--network", "n1fixed", "--ip", "10.77.251.50")
    assert network(carte, "n1fixed")["containers"][0]["ip_address"] == "10.77.251.50"
    error = fails(
        carte.client("run", "-d", "--network", "n1fixed", "--ip", "10.77.251.50", "busybox", "true")
    )
    assert "10.77.251.50" in error


def test_a_removed_container_s_address_is_not_handed_to_the_next_one(carte: Daemon) -> None:
    # As Docker's IPAM: the replacement of a container (a stop-first rolling update) must not
    # inherit the address whose connections are still being forgotten.
    ok(carte.client("network", "create", "--subnet", "10.77.252.0/24", "n1next"))

    def start(name: str) -> dict[str, str]:
        ok(
            carte.client(
                "run", "-d", "--name", name, "--network", "n1next", "busybox", "sleep", "60"
            )
        )
        return {c["name"]: c["ip_address"] for c in network(carte, "n1next")["containers"]}

    start("first")
    ips = start("second")
    ok(carte.client("rm", "-f", "second"))
    third = start("third")["third"]
    assert third not in (ips["first"], ips["second"]), (ips, third)


def test_prune_removes_only_unused_networks(carte: Daemon) -> None:
    ok(carte.client("network", "create", "--label", "team=a", "n1used"))
    ok(carte.client("network", "create", "n1unused"))
    serve_http(carte, "user", "--network", "n1used")
    bridge = network(carte, "n1unused")["bridge"]
    assert "n1unused" in ok(carte.client("network", "prune")).split()
    names = ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()
    assert "n1used" in names and "n1unused" not in names and "bridge" in names
    assert network(carte, "n1used")["labels"] == {"team": "a"}
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    assert "bridge" in fails(carte.client("network", "rm", "bridge"))


def test_service_names_and_dotted_aliases_resolve_on_their_network(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n1svc"))
    serve_http(carte, "replica", "--network", "n1svc", "--network-alias", "tasks.web")
    reply = carte.command_("SetServiceAddress", network="n1svc", names=["web", "web.demo"],
                           ip="10.77.9.200")  # fmt: skip
    assert reply.status == 200, reply.body
    script = "nslookup web.demo; nslookup web; nslookup tasks.web"
    out = ok(carte.client("run", "--rm", "--network", "n1svc", "busybox", "sh", "-c", script))
    assert out.count("10.77.9.200") == 2, out
    replica_ip = network(carte, "n1svc")["containers"][0]["ip_address"]
    assert replica_ip in out
    assert carte.command_("SetServiceAddress", network="n1svc", names=["web"]).status == 200
    withdrawn = carte.client("run", "--rm", "--network", "n1svc", "busybox", "nslookup", "web")
    assert "10.77.9.200" not in withdrawn.stdout
