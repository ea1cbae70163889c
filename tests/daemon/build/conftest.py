"""Fixtures for build tests: one real daemon per module with busybox imported as
`busybox:latest` through `carte import` (support/module_daemon.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("build_checks")  # its `built` asserts for the tests

from support.daemon import Daemon  # noqa: E402
from support.module_daemon import ModuleDaemon  # noqa: E402


@pytest.fixture(scope="module")
def build_daemon(busybox_tar: Path) -> Iterator[Daemon]:
    with ModuleDaemon(busybox_tar, tag="busybox:latest") as module:
        yield module.daemon
