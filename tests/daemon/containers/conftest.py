"""Fixtures: a real daemon subprocess per test module with the busybox image imported, and
cleanup after every test that leaves no container, volume, shim, cgroup or mount behind
(even when the test killed the daemon); see support/module_daemon.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

CONFIG = "containers:\n  log:\n    max_size: 1048576\n    max_file: 2\n"


@pytest.fixture(scope="module")
def module_daemon(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    """One daemon for a test module, with the image `busybox` imported."""
    with ModuleDaemon(busybox_tar, config=CONFIG, volumes=True) as module:
        yield module


@pytest.fixture
def carte(module_daemon: ModuleDaemon) -> Iterator[Daemon]:
    """The module's daemon (restarted if a test killed it); its containers and volumes removed
    afterwards."""
    with module_daemon.test() as daemon:
        yield daemon
