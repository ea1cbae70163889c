"""Fixtures: a real daemon subprocess per test module, with short restart backoff values in its
carte.yaml and the busybox image imported; every container removed after each test and
nothing left on the host (even when a test killed the daemon)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "containers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from carte_daemon import Daemon, DaemonFactory
from containers_lab import remove_leftovers

# Restarts after 0.3 s, 0.6 s, 1.2 s, 2.4 s (cap); a run of 5 s resets the backoff.
CONFIG = "containers:\n  restart:\n    base: 0.3\n    cap: 2.4\n    reset: 5.0\n"


@pytest.fixture(scope="module")
def lifecycle_daemon(busybox_tar: Path) -> Iterator[Daemon]:
    """One daemon for a test module, with the image `busybox` imported."""
    factory = DaemonFactory()
    try:
        daemon = factory(config=CONFIG)
        imported = daemon.client("import", str(busybox_tar), "busybox")
        assert imported.returncode == 0, imported.stderr
        yield daemon
    finally:
        try:
            for daemon in factory.daemons:
                if daemon.process is not None and daemon.process.poll() is None:
                    _remove_all(daemon)
        finally:
            for daemon in factory.daemons:
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.process.kill()
                    daemon.process.wait()
                remove_leftovers(daemon)
            factory.cleanup()


@pytest.fixture
def carte(lifecycle_daemon: Daemon) -> Iterator[Daemon]:
    """The module's daemon (started again if a test killed it); its containers removed after."""
    daemon = lifecycle_daemon
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            _remove_all(daemon)
        remove_leftovers(daemon)


def _remove_all(daemon: Daemon) -> None:
    """`carte rm -f` every container; a hanging removal is left to remove_leftovers."""
    try:
        for container_id in daemon.client("ps", "-aq", "--no-trunc").stdout.split():
            daemon.client("rm", "-f", "-v", container_id, timeout=15)
    except subprocess.TimeoutExpired:
        pass
