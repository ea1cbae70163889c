"""Fixtures: one real daemon per test module (busybox imported, networks from a private 10.x
pool no other area uses). After every test its stacks, containers and user networks are
removed; after the module nothing of it is left on the host (bridges, nft table)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from carte_daemon import Daemon, DaemonFactory

from carte.handlers.network._records import default_bridge_name, nft_table_name

CONFIG = 'network:\n  pools: ["10.93.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def remove_everything(daemon: Daemon) -> set[str]:
    """Every stack, container and user network of a running daemon; the bridges it used."""
    bridges = {
        n["bridge"] for n in json.loads(ok(daemon.client("--format", "json", "network", "ls")))
    }
    for stack in json.loads(ok(daemon.client("--format", "json", "stack", "ls"))):
        daemon.client("stack", "rm", stack["name"])
    for container_id in daemon.client("ps", "-aq", "--no-trunc").stdout.split():
        daemon.client("rm", "-f", container_id)
    for name in ok(daemon.client("network", "ls", "-q")).split():
        if name != "bridge":
            daemon.client("network", "rm", name)
    return bridges


def host_leftovers(root: Path, bridges: set[str]) -> list[str]:
    left = [b for b in bridges if Path(f"/sys/class/net/{b}").exists()]
    for table in (nft_table_name(root), f"{nft_table_name(root)}-lb"):
        probe = subprocess.run(
            ["nft", "list", "table", "ip", table], capture_output=True, check=False
        )
        if probe.returncode == 0:
            left.append(f"nft table ip {table}")
    return left


@pytest.fixture(scope="module")
def stack_daemon(busybox_tar: Path) -> Iterator[Daemon]:
    factory = DaemonFactory()
    bridges: set[str] = set()
    try:
        daemon = factory(config=CONFIG)
        bridges.add(default_bridge_name(daemon.root, ""))
        ok(daemon.client("import", str(busybox_tar), "busybox"))
        yield daemon
        if daemon.process is not None and daemon.process.poll() is None:
            bridges |= remove_everything(daemon)
            daemon.stop()
        left = host_leftovers(daemon.root, bridges)
        assert not left, f"left on the host: {left}"
    finally:
        for daemon in factory.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                remove_everything(daemon)
        factory.cleanup()
        for daemon in factory.daemons:
            for bridge in bridges:
                subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
            for table in (nft_table_name(daemon.root), f"{nft_table_name(daemon.root)}-lb"):
                subprocess.run(
                    ["nft", "delete", "table", "ip", table], capture_output=True, check=False
                )


@pytest.fixture
def carte(stack_daemon: Daemon) -> Iterator[Daemon]:
    """The module's daemon; its stacks, containers and networks removed after the test."""
    try:
        yield stack_daemon
    finally:
        if stack_daemon.process is not None and stack_daemon.process.poll() is None:
            remove_everything(stack_daemon)
