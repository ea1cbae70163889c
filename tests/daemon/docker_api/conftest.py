"""One Carte daemon per module with its Docker API socket on, and busybox imported as
``busybox:latest``; `docker(...)` runs the real Debian `docker` CLI against it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.daemon import Daemon, DaemonFactory

DockerCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def carte(busybox_tar: Path) -> Iterator[Daemon]:
    factory = DaemonFactory()
    try:
        probe = factory(start=False)
        socket = probe.workdir / "docker.sock"
        probe.config_path.write_text(
            f"handlers:\n  options:\n    docker:\n      socket: {socket}\n"
        )
        probe.start()
        imported = probe.client("import", str(busybox_tar), "busybox:latest")
        assert imported.returncode == 0, imported.stderr
        yield probe
        probe.client("rm", "-f", *_all_containers(probe))
    finally:
        factory.cleanup()


def _all_containers(daemon: Daemon) -> list[str]:
    listed = daemon.client("ps", "-aq")
    return listed.stdout.split() or ["--help"]


@pytest.fixture(scope="module")
def docker_host(carte: Daemon) -> str:
    return f"unix://{carte.workdir / 'docker.sock'}"


@pytest.fixture(scope="module")
def docker_env(docker_host: str) -> dict[str, str]:
    """The environment that points the `docker` CLI at Carte's socket, without any user config."""
    return {**os.environ, "DOCKER_HOST": docker_host, "DOCKER_CONFIG": "/nonexistent"}


@pytest.fixture(scope="module")
def docker(docker_env: dict[str, str]) -> DockerCli:
    env = docker_env

    def run(
        *args: str, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env,
            input=input,
        )  # fmt: skip

    return run
