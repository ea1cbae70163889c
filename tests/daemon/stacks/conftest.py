"""Fixtures: one real daemon per test module (busybox imported, networks from a private 10.x
pool no other area uses). After every test its stacks, containers and user networks are
removed; after the module nothing of it is left on the host (bridges, nft tables); see
support/module_daemon.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

CONFIG = 'network:\n  pools: ["10.93.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


@pytest.fixture(scope="module")
def stack_daemon(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    with ModuleDaemon(busybox_tar, config=CONFIG, stacks=True, networks=True) as module:
        yield module


@pytest.fixture
def carte(stack_daemon: ModuleDaemon) -> Iterator[Daemon]:
    """The module's daemon; its stacks, containers and networks removed after the test."""
    with stack_daemon.test() as daemon:
        yield daemon
