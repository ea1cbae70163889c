"""Fixtures: a real daemon subprocess per test module with the busybox image imported, and
cleanup after every test that leaves no container, shim, cgroup or mount behind (even when
the test killed the daemon)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from carte_daemon import Daemon, DaemonFactory, daemons
from containers_lab import remove_leftovers

__all__ = ["daemons"]

CONFIG = "containers:\n  log:\n    max_size: 1048576\n    max_file: 2\n"


@pytest.fixture(scope="module")
def module_daemon(busybox_tar: Path) -> Iterator[Daemon]:
    """One daemon for a test module, with the image `busybox` imported."""
    factory = DaemonFactory()
    try:
        daemon = factory(config=CONFIG)
        imported = daemon.client("import", str(busybox_tar), "busybox")
        assert imported.returncode == 0, imported.stderr
        yield daemon
    finally:
        for daemon in factory.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.stop()  # graceful: the network handler removes its bridge and table
            remove_leftovers(daemon)
        factory.cleanup()


@pytest.fixture
def carte(module_daemon: Daemon) -> Iterator[Daemon]:
    """The module's daemon (restarted if a test killed it); its containers removed afterwards."""
    daemon = module_daemon
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            listed = daemon.client("ps", "-aq", "--no-trunc")
            for container_id in listed.stdout.split():
                daemon.client("rm", "-f", "-v", container_id)
            for name in daemon.client("volume", "ls", "-q").stdout.split():
                daemon.client("volume", "rm", "-f", name)
        remove_leftovers(daemon)
