"""Fixtures: a real daemon subprocess per test module with the busybox image imported; every
container a test made is removed afterwards and nothing of it may be left on the host."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "containers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from carte_daemon import Daemon, DaemonFactory
from containers_lab import remove_leftovers


@pytest.fixture(scope="module")
def module_daemon(busybox_tar: Path) -> Iterator[Daemon]:
    factory = DaemonFactory()
    try:
        daemon = factory()
        imported = daemon.client("import", str(busybox_tar), "busybox")
        assert imported.returncode == 0, imported.stderr
        yield daemon
    finally:
        for daemon in factory.daemons:
            remove_leftovers(daemon)
        factory.cleanup()


@pytest.fixture
def carte(module_daemon: Daemon) -> Iterator[Daemon]:
    """The module's daemon; the containers a test made are removed after it."""
    daemon = module_daemon
    try:
        yield daemon
    finally:
        listed = daemon.client("ps", "-aq", "--no-trunc")
        for container_id in listed.stdout.split():
            daemon.client("rm", "-f", "-v", container_id)
        remove_leftovers(daemon)
