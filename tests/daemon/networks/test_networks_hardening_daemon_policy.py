"""What network policies filter, as README and docs/stacks.md state it (issue 11 item 19):
traffic between members of the network, counted as denied in `network inspect`; not the
host's own traffic to a member (the daemon's readiness probes come from there) nor
published ports, which a policy does not close."""

from __future__ import annotations

import socket

from networks_lab import fetch_from, host_fetch, network, ok, serve_http, wait_until
from support.daemon import Daemon


def test_policy_filters_members_not_the_host_nor_published_ports(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n19pol"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        published = probe.getsockname()[1]
    publish = f"127.0.0.1:{published}:80"
    serve_http(carte, "locked", "--label", "app=db", "--network", "n19pol", "-p", publish)
    address = network(carte, "n19pol")["containers"][0]["ip_address"]
    ok(carte.client("network", "policy", "add", "n19pol", "--from", "app=web", "--to", "app=db"))
    member = ("--label", "app=other", "--network", "n19pol")
    assert fetch_from(carte, address, *member) == "", "a member outside the policy got through"
    wait_until(lambda: network(carte, "n19pol")["denied_packets"] > 0)
    assert host_fetch(address, 80) != "", "the host's own traffic was filtered"
    assert host_fetch("127.0.0.1", published) != "", "the published port was closed"
    allowed = fetch_from(carte, address, "--label", "app=web", "--network", "n19pol")
    assert allowed != "", "the policy did not allow app=web"
