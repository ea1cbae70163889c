"""Fixtures for the daemon-level image tests: one real daemon per module with busybox imported,
Debian's docker-registry on loopback (an open one and one with htpasswd auth), a client
environment with its own auth.json, and cleanup of every container a test made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from images_peers import PASSWORD, USER
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon, module_fixture
from support.registry import RunningRegistry, start_private_registry, start_registry

module_daemon = module_fixture("module_daemon")


@pytest.fixture
def carte(module_daemon: ModuleDaemon, tmp_path: Path) -> Iterator[Daemon]:
    """The module's daemon, its client pointed at a per-test XDG_CONFIG_HOME (auth.json)."""
    config_home = tmp_path / "client-config"
    with module_daemon.test() as daemon:
        original = daemon.client

        def client(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
            merged = {**daemon.env, "XDG_CONFIG_HOME": str(config_home), **(env or {})}
            return original(*args, timeout=timeout, env=merged)

        daemon.client = client  # type: ignore[method-assign]
        daemon.config_home = config_home  # type: ignore[attr-defined]
        try:
            yield daemon
        finally:
            daemon.client = original  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("images-registry") / "open", None)


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_private_registry(
        tmp_path_factory.mktemp("images-registry-auth"), USER, PASSWORD
    )
