"""Fixtures: a real daemon per test module (busybox imported) whose networks come from a
private 10.x pool and whose DNS forwards to a closed loopback port; after every test its
containers and user networks are removed, and after the module nothing of it is left on the
host: no bridge, veth or nftables table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from carte_daemon import Daemon, DaemonFactory
from networks_lab import link_exists, network_config, nft_table, ok, remove_everything

from carte.handlers.network._records import default_bridge_name, nft_table_name


def host_leftovers(daemon: Daemon, bridges: set[str]) -> list[str]:
    """This daemon's bridges and nftables table still on the host."""
    left = [b for b in bridges if link_exists(b)]
    table = nft_table_name(daemon.root)
    if nft_table(table) is not None:
        left.append(f"nft table ip {table}")
    return left


def force_clean(daemon: Daemon, bridges: set[str]) -> None:
    """Last resort after a failed test: delete what `host_leftovers` found."""
    for bridge in bridges:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    subprocess.run(
        ["nft", "delete", "table", "ip", nft_table_name(daemon.root)],
        capture_output=True,
        check=False,
    )


class NetDaemon:
    """A daemon plus the bridges it was seen to use (for the leftover check)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.bridges = {default_bridge_name(daemon.root, "")}

    def remember_bridges(self) -> None:
        import json

        listing = json.loads(ok(self.daemon.client("--format", "json", "network", "ls")))
        self.bridges.update(n["bridge"] for n in listing)


@pytest.fixture(scope="module")
def net_daemon(busybox_tar: Path) -> Iterator[NetDaemon]:
    factory = DaemonFactory()
    try:
        daemon = factory(config=network_config())
        ok(daemon.client("import", str(busybox_tar), "busybox"))
        net = NetDaemon(daemon)
        yield net
        if daemon.process is not None and daemon.process.poll() is None:
            remove_everything(daemon)
            daemon.stop()
        left = host_leftovers(daemon, net.bridges)
        assert not left, f"left on the host: {left}"
    finally:
        for daemon in factory.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                remove_everything(daemon)
        factory.cleanup()
        for daemon in factory.daemons:
            force_clean(daemon, {default_bridge_name(daemon.root, "")})


@pytest.fixture
def carte(net_daemon: NetDaemon) -> Iterator[Daemon]:
    """The module's daemon (restarted if a test killed it); emptied after the test."""
    daemon = net_daemon.daemon
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            net_daemon.remember_bridges()
            remove_everything(daemon)
