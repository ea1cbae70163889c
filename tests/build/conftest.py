"""Fixtures for build tests: one real daemon per module with busybox imported as
`busybox:latest` through `carte import` (tests/api/carte_daemon.py starts it)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from carte_daemon import Daemon, DaemonFactory, daemons

__all__ = ["build_daemon", "daemons"]


@pytest.fixture(scope="module")
def build_daemon(busybox_tar: Path) -> Iterator[Daemon]:
    factory = DaemonFactory()
    try:
        daemon = factory()
        imported = daemon.client("import", str(busybox_tar), "busybox:latest")
        assert imported.returncode == 0, imported.stderr
        yield daemon
    finally:
        factory.cleanup()
