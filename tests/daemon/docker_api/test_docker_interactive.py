"""`docker exec` (plain, -i, -d, -it), `docker run -it` and `docker attach` against Carte's
Docker socket: stdin through the hijacked connection, the terminal's size, exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing

import docker as docker_py
import pytest
from support import REPO
from support.containers import wait_for

sys.path.insert(0, str(REPO / "tests" / "daemon" / "interactive"))
from pty_client import PtyClient

DockerCli = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.daemon]


@pytest.fixture
def terminal(docker_env: dict[str, str]) -> Iterator[Callable[..., PtyClient]]:
    """`docker ARGS...` on a pty of its own, closed after the test."""
    with ExitStack() as opened:

        def spawn(*args: str) -> PtyClient:
            return opened.enter_context(closing(PtyClient(["docker", *args], docker_env)))

        yield spawn


@pytest.fixture(scope="module")
def sleeper(docker: DockerCli) -> Iterator[str]:
    started = docker("run", "-d", "--name", "sleeper", "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    yield "sleeper"
    docker("rm", "-f", "sleeper")


def test_exec_output_exit_code_stdin_and_detach(docker: DockerCli, sleeper: str) -> None:
    ran = docker("exec", sleeper, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (ran.returncode, ran.stdout, ran.stderr) == (5, "out\n", "err\n")
    piped = docker("exec", "-i", sleeper, "sh", "-c", "tr a-z A-Z; echo done", input="hello\n")
    assert (piped.returncode, piped.stdout) == (0, "HELLO\ndone\n"), piped.stderr
    detached = docker("exec", "-d", sleeper, "sh", "-c", "echo bg > /tmp/mark")
    assert (detached.returncode, detached.stdout) == (0, ""), detached.stderr
    wait_for(lambda: docker("exec", sleeper, "cat", "/tmp/mark").stdout == "bg\n", what="exec -d")
    missing = docker("exec", sleeper, "no-such-command")
    # 126 as dockerd (exec failed; test_docker_vs_dockerd compares); the reason on stderr
    assert missing.returncode == 126 and "no-such-command" in missing.stderr


def test_exec_in_a_stopped_container_is_refused(docker: DockerCli, docker_host: str) -> None:
    assert docker("run", "-d", "--name", "idle", "busybox", "sleep", "300").returncode == 0
    client = docker_py.APIClient(base_url=docker_host, version="1.41")
    try:
        created = client.exec_create("idle", ["true"])
        assert docker("stop", "-t", "0", "idle").returncode == 0
        refused = docker("exec", "idle", "true")
        assert refused.returncode != 0 and "is not running" in refused.stderr
        # stopped between create and start: told on the stream after the upgrade, as dockerd
        told = client.exec_start(created["Id"])
        assert b"not running" in told, told
        assert client.exec_inspect(created["Id"])["ExitCode"] == 126
    finally:
        client.close()
    assert docker("rm", "idle").returncode == 0


def test_exec_it_is_a_terminal_with_the_windows_size(
    sleeper: str, terminal: Callable[..., PtyClient]
) -> None:
    client = terminal("exec", "-it", sleeper, "sh")
    client.send(b"tty\r")
    client.expect(b"/dev/pts/")
    for rows, cols in ((30, 100), (40, 120)):
        client.resize(rows, cols)
        client.send(b"stty size\r")
        client.expect(f"{rows} {cols}".encode())
    client.send(b"exit 7\r")
    assert client.wait() == 7


def test_run_it_and_attach(docker: DockerCli, terminal: Callable[..., PtyClient]) -> None:
    client = terminal("run", "-it", "--rm", "busybox", "sh")
    client.expect(b"# ")
    client.send(b"echo $((6*7))\r")
    client.expect(b"42")
    client.send(b"exit 3\r")
    assert client.wait() == 3
    started = docker("run", "-dit", "--name", "shell", "busybox", "sh")
    assert started.returncode == 0, started.stderr
    attached = terminal("attach", "shell")
    attached.send(b"echo attached-$((2+2))\r")
    attached.expect(b"attached-4")
    attached.send(b"exit 4\r")
    assert attached.wait() == 4
    shown = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "shell")
    assert shown.stdout.split() == ["exited", "4"]
    assert docker("rm", "shell").returncode == 0
