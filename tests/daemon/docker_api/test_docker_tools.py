"""Testcontainers for Python and Debian's docker-compose 1.29, unmodified, against Carte's
Docker socket. Testcontainers' reaper (Ryuk) is turned off: its image would come from Docker
Hub, which this machine cannot reach; the container is removed by the test's `with` instead."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from support.containers import wait_for

DockerCli = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.daemon]

SERVE = (
    "mkdir /www && echo {text} > /www/index.html && echo {ready} && exec httpd -f -p 8080 -h /www"
)


def test_testcontainers_waits_for_a_log_line_and_reads_the_port(
    docker_host: str, docker: DockerCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    command = ["sh", "-c", SERVE.format(text="from-testcontainers", ready="server ready")]
    ready = LogMessageWaitStrategy("server ready").with_startup_timeout(30)
    container = DockerContainer("busybox").with_command(command).with_exposed_ports(8080)
    with container.waiting_for(ready) as server:
        address = f"http://{server.get_container_host_ip()}:{server.get_exposed_port(8080)}/"
        answers: list[str] = []
        wait_for(lambda: answers.append(_get(address)) or answers[-1], what="the published port")
        assert answers[-1] == "from-testcontainers\n"
        identifier = server.get_wrapped_container().id
    assert identifier not in docker("ps", "-aq", "--no-trunc").stdout.split()


def _get(address: str) -> str:
    try:
        with urllib.request.urlopen(address, timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_up_ps_logs_exec_down(
    docker_host: str, docker: DockerCli, tmp_path: Path
) -> None:
    (tmp_path / "docker-compose.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  web:\n"
        "    image: busybox\n"
        "    init: true\n"
        f"    command: [sh, -c, '{SERVE.format(text='from-web', ready='web up')}']\n"
        "  client:\n"
        "    image: busybox\n"
        "    init: true\n"
        "    depends_on: [web]\n"
        '    command: [sh, -c, \'until printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 web 8080;'
        " do sleep 0.2; done; exec sleep 300']\n"
    )

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["docker-compose", "-H", docker_host, "-p", "pair", *args]
        return subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PATH": _path()}
        )

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stderr
        listed = compose("ps", "--services", "--filter", "status=running")
        assert sorted(listed.stdout.split()) == ["client", "web"], listed.stderr
        logs: list[str] = []
        wait_for(
            lambda: "from-web" in (logs.append(compose("logs", "--no-color", "client").stdout)
                                   or logs[-1]),
            what="the client's answer from web",
        )  # fmt: skip
        assert "client_1  |" in logs[-1]
        assert "web up" in compose("logs", "--no-color", "web").stdout
        again = compose("up", "-d")  # the project's network is checked and kept
        assert again.returncode == 0 and "recreated" not in again.stderr, again.stderr
        ran = compose("exec", "-T", "web", "sh", "-c", "cat /www/index.html; exit 3")
        assert (ran.returncode, ran.stdout) == (3, "from-web\n"), ran.stderr
        down = compose("down")
        assert down.returncode == 0, down.stderr
    except BaseException:
        compose("down", "-t", "1")
        raise
    assert docker("ps", "-aq", "--filter", "label=com.docker.compose.project=pair").stdout == ""
    assert "pair_default" not in docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def _path() -> str:
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
