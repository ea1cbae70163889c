"""Fixtures: a real daemon per test module (busybox imported) whose networks come from a
private 10.x pool and whose DNS forwards to a closed loopback port; after every test its
containers and user networks are removed, and after the module nothing of it is left on the
host: no bridge, veth or nftables table (support/module_daemon.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from networks_lab import network_config
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon


@pytest.fixture(scope="module")
def net_daemon(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    with ModuleDaemon(busybox_tar, config=network_config(), networks=True) as module:
        yield module


@pytest.fixture
def carte(net_daemon: ModuleDaemon) -> Iterator[Daemon]:
    """The module's daemon (restarted if a test killed it); emptied after the test."""
    with net_daemon.test() as daemon:
        yield daemon
