"""Fixtures: a real daemon subprocess with the busybox image imported, and cleanup that leaves
no container, shim, cgroup or mount of that daemon behind (even after the test killed it)."""

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

# Short restart backoff so restart-policy facts come quickly if a test sets one.
CONFIG = "containers:\n  log:\n    max_size: 1048576\n    max_file: 2\n"


@pytest.fixture
def carte(daemons: DaemonFactory, busybox_tar: Path) -> Iterator[Daemon]:
    """A running daemon with the image `busybox` imported."""
    daemon = daemons(config=CONFIG)
    imported = daemon.client("import", str(busybox_tar), "busybox")
    assert imported.returncode == 0, imported.stderr
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            listed = daemon.client("ps", "-aq", "--no-trunc")
            for container_id in listed.stdout.split():
                daemon.client("rm", "-f", container_id)
        remove_leftovers(daemon)

