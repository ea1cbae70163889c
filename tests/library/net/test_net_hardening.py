"""Unpublished ports stay private (issue 11, item 9): a LAN neighbour that routes a container
subnet through the host reaches only what is published, as with Docker; members, the host and
the containers' own outgoing flows are unaffected, and so are other programs' tables."""

from __future__ import annotations

import re
import subprocess

import pytest
from net_lab import NetLab

from carte.net import nft
from carte.net.ports import ANY_ADDRESS, pick_free_port
from carte.net.rules import NetworkRules, PublishedPort, Ruleset
from carte.net.sysctl import enable_ip_forward

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def _list(family: str, table: str) -> str:
    return subprocess.run(
        ["nft", "list", "table", family, table], capture_output=True, text=True, check=True
    ).stdout


def test_a_neighbour_routing_the_subnet_via_the_host_reaches_published_ports_only(
    lab: NetLab,
) -> None:
    enable_ip_forward()
    bridge = lab.bridge("a")
    web, member = lab.container(bridge, "1"), lab.container(bridge, "2")
    lab.serve(web.netns, 80, "web")
    lab.serve(web.netns, 8080, "secret")
    neighbour, far, host_side = lab.outside()
    lab.serve(neighbour, 7000, "far")
    subprocess.run(
        ["ip", "-n", neighbour, "route", "add", str(bridge.subnet), "via", str(host_side)],
        check=True,
    )
    foreign = f"h9lan{lab.uid}"
    subprocess.run(
        ["nft", "-f", "-"],
        input=(
            f"table ip {foreign} {{\n  chain forward {{ type filter hook forward priority 5; "
            "policy accept;\n    counter accept\n  }\n}\n"
        ),
        text=True,
        check=True,
    )
    try:
        port = pick_free_port(ANY_ADDRESS, "tcp")
        published = (PublishedPort(host_port=port, container_ip=web.address, container_port=80),)
        rules = NetworkRules(bridge=bridge.name, subnet=bridge.subnet, published=published)
        # Plain routing first: without Carte's table the neighbour gets in anywhere.
        assert lab.fetch(neighbour, web.address, 8080) == f"secret {far}"
        before = _list("ip", foreign).replace("\n", " ")

        nft.apply(Ruleset(table=lab.table, networks=(rules,)))

        assert lab.fetch(neighbour, web.address, 8080) is None
        assert lab.fetch(neighbour, web.address, 80) is None  # published as host port only
        assert lab.fetch(neighbour, host_side, port) == f"web {far}"
        assert lab.fetch(member.netns, web.address, 8080) == f"secret {member.address}"
        assert lab.fetch(None, web.address, 8080) == f"secret {bridge.gateway}"
        assert lab.fetch(web.netns, far, 7000) == f"far {host_side}"  # replies come back in
        after = _list("ip", foreign).replace("\n", " ")
        strip = re.compile(r"counter packets \d+ bytes \d+")
        assert strip.sub("counter", after) == strip.sub("counter", before)
    finally:
        subprocess.run(["nft", "delete", "table", "ip", foreign], check=False)
