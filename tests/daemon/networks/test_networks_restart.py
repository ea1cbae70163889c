"""Addresses and rules across a daemon SIGKILL, at scale, and other programs' tables."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess

import pytest
from networks_lab import bridge_ports, network, nft_table, ok, wait_until
from support.containers import run_detached
from support.daemon import Daemon

from carte.handlers.network._records import nft_table_name


def _rules(daemon: Daemon) -> str:
    """Carte's table without counter values (they change as packets flow)."""
    return re.sub(r"packets \d+ bytes \d+", "", nft_table(nft_table_name(daemon.root)) or "")


@pytest.mark.slow
def test_fifty_containers_get_distinct_addresses_that_survive_a_daemon_kill(
    carte: Daemon,
) -> None:
    ok(carte.client("network", "create", "--subnet", "10.77.252.0/24", "n1many"))
    for index in range(50):
        run_detached(carte, "--name", f"m{index}", "--network", "n1many", "busybox", "sleep", "600")
    before = {m["name"]: m["ip_address"] for m in network(carte, "n1many")["containers"]}
    assert len(before) == 50 and len(set(before.values())) == 50
    bridge = network(carte, "n1many")["bridge"]
    rules = _rules(carte)
    assert len(bridge_ports(bridge)) == 50

    victim = json.loads(ok(carte.client("inspect", "m7")))[0]
    carte.stop(signal.SIGKILL)
    os.kill(victim["state"]["pid"], signal.SIGKILL)  # dies while the daemon is away
    stale = f"n1st{secrets.token_hex(4)}"  # a veth on the bridge that Carte's state lacks
    subprocess.run(["ip", "link", "add", stale, "master", bridge, "type", "veth", "peer",
                    "name", f"{stale}p"], check=True)  # fmt: skip
    carte.start()
    assert subprocess.run(["ip", "link", "show", stale], capture_output=True).returncode != 0

    wait_until(lambda: "m7" not in {m["name"] for m in network(carte, "n1many")["containers"]})
    after = {m["name"]: m["ip_address"] for m in network(carte, "n1many")["containers"]}
    expected = {name: ip for name, ip in before.items() if name != "m7"}
    assert after == expected
    assert len(bridge_ports(bridge)) == 49
    assert _rules(carte) == rules  # rebuilt, not duplicated

    run_detached(carte, "--name", "late", "--network", "n1many", "busybox", "sleep", "600")
    late = {m["name"]: m["ip_address"] for m in network(carte, "n1many")["containers"]}["late"]
    assert late not in expected.values()


def test_restart_after_sigkill_leaves_published_rules_as_the_store_says(carte: Daemon) -> None:
    run_detached(carte, "--name", "kept", "-p", "80", "busybox", "sleep", "600")
    rules = _rules(carte)
    assert "dnat to" in rules
    carte.stop(signal.SIGKILL)
    carte.start()
    assert _rules(carte) == rules
    ok(carte.client("rm", "-f", "kept"))
    assert "dnat to" not in _rules(carte)


def test_other_programs_tables_are_untouched(carte: Daemon) -> None:
    table = f"n1keep{secrets.token_hex(3)}"
    script = (
        f"table inet {table} {{\n"
        "  chain forward { type filter hook forward priority 10; policy accept;\n"
        "    ip saddr 192.0.2.77 counter accept\n  }\n"
        "  chain output { type filter hook output priority 10; policy accept; }\n}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
    try:
        before = nft_table(table, "inet")
        ok(carte.client("network", "create", "n1tables"))
        run_detached(
            carte, "--name", "t1", "--network", "n1tables", "-p", "80", "busybox", "sleep", "600"
        )
        ok(carte.client("network", "policy", "add", "n1tables", "--from", "a=b", "--to", "c=d"))
        ok(carte.client("rm", "-f", "t1"))
        ok(carte.client("network", "rm", "n1tables"))
        assert nft_table(table, "inet") == before
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


def test_the_default_bridge_outlives_a_container_and_goes_with_a_graceful_stop(
    carte: Daemon,
) -> None:
    run_detached(carte, "--name", "only", "busybox", "sleep", "600")
    bridge = network(carte, "bridge")["bridge"]
    assert bridge_ports(bridge)
    ok(carte.client("rm", "-f", "only"))
    # kept (idle) for the next container, so back-to-back runs do not rebuild it
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode == 0
    assert bridge_ports(bridge) == []
    assert carte.stop() == 0
    assert nft_table(nft_table_name(carte.root)) is None
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
