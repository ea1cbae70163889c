"""The same `docker` commands against Carte and against a private dockerd (bench/peers.py):
exit codes, log bytes and the inspect fields scripts read must match."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO

sys.path.insert(0, str(REPO / "bench"))
from peers import Peers

pytestmark = [
    pytest.mark.root,
    pytest.mark.kernel,
    pytest.mark.daemon,
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="docker.io is not installed"),
    # bench/peers.py leaves dockerd's log file to the garbage collector
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

FLOW = ("sh", "-c", "echo out; echo err >&2; exit 3")


@pytest.fixture(scope="module")
def dockerd_env(busybox_tar: Path) -> Iterator[dict[str, str]]:
    with Peers() as peers:
        env = peers.docker()
        imported = subprocess.run(
            ["docker", "import", str(busybox_tar), "busybox:latest"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert imported.returncode == 0, imported.stderr
        yield env


def _docker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=60)


def test_run_rm_and_logs_match_dockerd(docker_host: str, dockerd_env: dict[str, str]) -> None:
    carte_env = {**os.environ, "DOCKER_HOST": docker_host, "DOCKER_CONFIG": "/nonexistent"}
    answers = []
    for env in (carte_env, dockerd_env):
        ran = _docker(env, "run", "--rm", "--network", "none", "busybox", *FLOW)
        started = _docker(env, "run", "-d", "--network", "none", "busybox", *FLOW)
        container = started.stdout.strip()
        waited = _docker(env, "wait", container)
        logs = _docker(env, "logs", container)
        shown = _docker(env, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container)
        _docker(env, "rm", container)
        answers.append(
            (
                ran.returncode,
                ran.stdout,
                ran.stderr,
                waited.stdout,
                logs.stdout,
                logs.stderr,
                shown.stdout,
            )
        )
    assert answers[0] == answers[1]
    assert answers[0][:3] == (3, "out\n", "err\n")
