"""The same `docker` commands against Carte and against a private dockerd (bench/peers.py):
exit codes, log bytes and the inspect fields scripts read must match."""

from __future__ import annotations

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


def test_run_rm_and_logs_match_dockerd(
    docker_env: dict[str, str], dockerd_env: dict[str, str]
) -> None:
    answers = []
    for env in (docker_env, dockerd_env):
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


def test_exec_cp_and_top_match_dockerd(
    docker_env: dict[str, str], dockerd_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("payload\n")
    answers = []
    for number, env in enumerate((docker_env, dockerd_env)):
        name = f"cmp-{number}"
        started = _docker(env, "run", "-d", "--network", "none", "--name", name, "busybox",
                          "sleep", "300")  # fmt: skip
        assert started.returncode == 0, started.stderr
        ran = _docker(env, "exec", "-e", "X=1", "-w", "/tmp", name, *FLOW)
        shown = _docker(env, "exec", "-u", "nobody", name, "sh", "-c", "id -u; pwd; echo $X")
        piped = subprocess.run(["docker", "exec", "-i", name, "wc", "-c"], input="12345",
                               env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        copied_in = _docker(env, "cp", str(tmp_path / "in.txt"), f"{name}:/tmp/")
        read = _docker(env, "exec", name, "cat", "/tmp/in.txt")
        unknown = _docker(env, "exec", name, "no-such-program")  # dockerd: 126, exec failed
        out = tmp_path / f"out-{number}"
        copied_out = _docker(env, "cp", f"{name}:/tmp/in.txt", str(out))
        missing = _docker(env, "cp", f"{name}:/nowhere", str(tmp_path / "none"))
        top = _docker(env, "top", name)
        _docker(env, "rm", "-f", name)
        answers.append(
            (
                (ran.returncode, ran.stdout, ran.stderr),
                shown.stdout,
                piped.stdout.strip(),
                copied_in.returncode,
                read.stdout,
                copied_out.returncode,
                out.read_text(),
                missing.returncode,
                top.stdout.splitlines()[0].split(),
                [line.split()[-2:] for line in top.stdout.splitlines()[1:]],
                unknown.returncode,
            )
        )
    assert answers[0] == answers[1]
    assert answers[0][:3] == ((3, "out\n", "err\n"), answers[0][1], "5"), answers[0]
    assert answers[0][-1] == 126
    assert answers[0][6] == "payload\n" and answers[0][7] != 0
