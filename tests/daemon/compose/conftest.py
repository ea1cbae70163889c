"""Fixtures: one real daemon per test module (busybox imported, networks from a private 10.91
pool no other area uses); after every test its stacks, containers, volumes and networks are
removed, after the module nothing of it is left on the host (support/module_daemon.py).

`compose(*args, cwd=...)` runs `carte compose ARGS` from a directory, as a user types it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.91.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'

Compose = Callable[..., subprocess.CompletedProcess[str]]


compose_daemon, carte = daemon_fixtures(
    "compose_daemon", config=CONFIG, stacks=True, networks=True, volumes=True
)


@pytest.fixture
def compose(carte: Daemon) -> Compose:
    def run(
        *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*carte.command, "--host", f"unix://{carte.socket}", "compose", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**carte.env, **(env or {})},
        )

    return run
