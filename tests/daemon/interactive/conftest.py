"""Fixtures: a real daemon subprocess per test module with the busybox image imported; every
container a test made is removed afterwards and nothing of it may be left on the host (see
support/module_daemon.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon


@pytest.fixture(scope="module")
def module_daemon(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    with ModuleDaemon(busybox_tar) as module:
        yield module


@pytest.fixture
def carte(module_daemon: ModuleDaemon) -> Iterator[Daemon]:
    """The module's daemon; the containers a test made are removed after it."""
    with module_daemon.test() as daemon:
        yield daemon
