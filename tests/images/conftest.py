"""Fixtures for the daemon-level image tests: one real daemon per module with busybox imported,
Debian's docker-registry on loopback (an open one and one with htpasswd auth), a client
environment with its own auth.json, and cleanup of every container a test made."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "containers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from carte_daemon import Daemon, DaemonFactory
from containers_lab import remove_leftovers
from image_registry_server import RunningRegistry, start_registry
from images_peers import PASSWORD, USER


@pytest.fixture(scope="module")
def module_daemon(busybox_tar: Path) -> Iterator[Daemon]:
    factory = DaemonFactory()
    try:
        daemon = factory()
        imported = daemon.client("import", str(busybox_tar), "busybox")
        assert imported.returncode == 0, imported.stderr
        yield daemon
    finally:
        for daemon in factory.daemons:
            remove_leftovers(daemon)
        factory.cleanup()


@pytest.fixture
def carte(module_daemon: Daemon, tmp_path: Path) -> Iterator[Daemon]:
    """The module's daemon, its client pointed at a per-test XDG_CONFIG_HOME (auth.json)."""
    daemon = module_daemon
    config_home = tmp_path / "client-config"
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
        for container_id in original("ps", "-aq", "--no-trunc").stdout.split():
            original("rm", "-f", container_id)
        remove_leftovers(daemon)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("images-registry") / "open", None)


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    base = tmp_path_factory.mktemp("images-registry-auth")
    htpasswd = base / "htpasswd"
    subprocess.run(
        ["htpasswd", "-B", "-b", "-c", str(htpasswd), USER, PASSWORD],
        check=True,
        capture_output=True,
    )
    yield from start_registry(base / "private", htpasswd)
