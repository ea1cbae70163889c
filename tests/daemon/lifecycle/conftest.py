"""Fixtures: a real daemon subprocess per test module, with short restart backoff values in its
carte.yaml and the busybox image imported; every container removed after each test and
nothing left on the host (even when a test killed the daemon); see support/module_daemon.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

# Restarts after 0.3 s, 0.6 s, 1.2 s, 2.4 s (cap); a run of 5 s resets the backoff.
CONFIG = "containers:\n  restart:\n    base: 0.3\n    cap: 2.4\n    reset: 5.0\n"


@pytest.fixture(scope="module")
def lifecycle_daemon(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    """One daemon for a test module, with the image `busybox` imported."""
    with ModuleDaemon(busybox_tar, config=CONFIG) as module:
        yield module


@pytest.fixture
def carte(lifecycle_daemon: ModuleDaemon) -> Iterator[Daemon]:
    """The module's daemon (started again if a test killed it); its containers removed after."""
    with lifecycle_daemon.test() as daemon:
        yield daemon
