"""`carte compose VERB` as a Compose user types it, from the project's directory, against a
real daemon: each verb is checked by its effect (containers, logs, ports, volumes)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from support.containers import ok, wait_for
from support.daemon import Daemon

Compose = Callable[..., subprocess.CompletedProcess[str]]

FILE = """\
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo web says $$GREETING; exec httpd -f -p 8080"]
    environment:
      GREETING: hello
    ports:
      - "127.0.0.1:18931:8080"
    volumes:
      - data:/data
    deploy:
      replicas: 2
  worker:
    image: busybox
    command: ["sh", "-c", "sleep 1; echo worker done; exec sleep 3600"]
volumes:
  data:
"""


def project(tmp_path: Path, name: str = "shop", text: str = FILE) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "compose.yaml").write_text(text)
    return directory


def running(compose: Compose, cwd: Path, count: int) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def up() -> bool:
        rows[:] = json.loads(ok(compose("ps", "--format", "json", cwd=cwd)))
        return len([r for r in rows if r["status"].startswith("Up")]) == count

    wait_for(up, 60, f"{count} running containers")
    return rows


def test_up_ps_port_config_down(compose: Compose, carte: Daemon, tmp_path: Path) -> None:
    cwd = project(tmp_path)
    up = compose("up", "-d", cwd=cwd)
    assert up.returncode == 0, up.stderr
    assert "Service web" in up.stdout and "Service worker" in up.stdout
    rows = running(compose, cwd, 3)
    assert {r["service"] for r in rows} == {"web", "worker"}
    assert all(r["stack"] == "shop" for r in rows)  # the directory names the project
    table = ok(compose("ps", cwd=cwd))
    assert "127.0.0.1:18931->8080/tcp" in table
    assert ok(compose("port", "web", "8080", cwd=cwd)).strip() == "127.0.0.1:18931"
    assert ok(compose("config", "--services", cwd=cwd)).split() == ["web", "worker"]
    normalized = json.loads(ok(compose("config", "--format", "json", cwd=cwd)))
    assert normalized["services"]["web"]["environment"] == {"GREETING": "hello"}
    assert "data" in ok(carte.client("volume", "ls", "-q")).replace("shop_", "")
    down = compose("down", "-v", cwd=cwd)
    assert down.returncode == 0, down.stderr
    assert " Volume shop_data  Removed" in down.stdout
    assert json.loads(ok(carte.client("--format", "json", "stack", "ls"))) == []
    assert "shop_data" not in ok(carte.client("volume", "ls", "-q"))
    assert ok(carte.client("ps", "-aq")).split() == []
    # down of a project that is not deployed does nothing, as Compose's
    assert compose("down", cwd=cwd).returncode == 0


def test_project_name_and_file_lookup(compose: Compose, tmp_path: Path) -> None:
    cwd = project(tmp_path, "Top.Dir", FILE.replace("replicas: 2", "replicas: 1"))
    below = cwd / "src" / "deep"
    below.mkdir(parents=True)
    # found from a subdirectory, named after the file's directory (lowercased, "." dropped)
    ok(compose("up", "-d", cwd=below))
    assert {r["stack"] for r in running(compose, below, 2)} == {"topdir"}
    ok(compose("down", cwd=below))
    # -p wins over COMPOSE_PROJECT_NAME, which wins over the directory
    ok(compose("-p", "named", "up", "-d", cwd=cwd, env={"COMPOSE_PROJECT_NAME": "fromenv"}))
    rows = json.loads(ok(compose("-p", "named", "ps", "--format", "json", cwd=cwd)))
    assert {r["stack"] for r in rows} == {"named"}
    ok(compose("-p", "named", "down", cwd=cwd))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "docker-compose.yml").write_text(FILE.replace("replicas: 2", "replicas: 1"))
    env = {"COMPOSE_PROJECT_NAME": "fromenv"}
    ok(compose("-f", str(other / "docker-compose.yml"), "up", "-d", cwd=tmp_path, env=env))
    listed = compose(
        "-f", str(other / "docker-compose.yml"), "ps", "--format", "json", cwd=tmp_path, env=env
    )
    rows = json.loads(ok(listed))
    assert {r["stack"] for r in rows} == {"fromenv"}


def test_logs_are_prefixed_interleaved_and_tailed(
    compose: Compose, carte: Daemon, tmp_path: Path
) -> None:
    cwd = project(tmp_path)
    ok(compose("up", "-d", cwd=cwd))
    running(compose, cwd, 3)

    def worker_done() -> bool:
        return "worker done" in compose("logs", "worker", cwd=cwd).stdout

    wait_for(worker_done, 30, "the worker's line")
    lines = ok(compose("logs", "-t", cwd=cwd)).splitlines()
    said = [line for line in lines if "says hello" in line or "worker done" in line]
    assert len(said) == 3, lines
    assert all(" | " in line for line in said)
    prefixes = {line.split(" | ")[0].strip() for line in said}
    assert len(prefixes) == 3 and all(p.startswith("shop_") for p in prefixes)
    stamps = [line.split(" | ", 1)[1].split(" ", 1)[0] for line in said]
    assert stamps == sorted(stamps)  # interleaved by time: the worker (1 s later) is last
    assert "worker done" in said[-1]
    only_worker = ok(compose("logs", "--no-log-prefix", "worker", cwd=cwd))
    assert only_worker.strip() == "worker done"
    assert ok(compose("logs", "--tail", "0", cwd=cwd)).strip() == ""
    # -f follows: a line the worker writes after it started arrives, prefixed
    follow = subprocess.Popen(
        [*carte.command, "--host", f"unix://{carte.socket}", "compose", "logs", "-f", "worker"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env=carte.env,
    )
    try:
        assert follow.stdout is not None
        assert "worker done" in follow.stdout.readline()
        ok(compose("exec", "-T", "worker", "sh", "-c", "echo later > /proc/1/fd/1", cwd=cwd))
        assert follow.stdout.readline().rstrip().endswith("| later")
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()


def test_exec_run_restart_stop_start_top_images(
    compose: Compose, carte: Daemon, tmp_path: Path
) -> None:
    cwd = project(tmp_path)
    ok(compose("up", "-d", cwd=cwd))
    rows = running(compose, cwd, 3)
    webs = sorted((r for r in rows if r["service"] == "web"), key=lambda r: r["replica"])
    # exec --index picks the replica; -T: no terminal here anyway
    for row in webs:
        name = ok(compose("exec", "-T", "--index", str(row["replica"]), "web", "hostname", cwd=cwd))
        host = ok(carte.client("exec", row["container_id"], "hostname"))
        assert name == host
    assert compose("exec", "-T", "web", "sh", "-c", "exit 3", cwd=cwd).returncode == 3
    # run --rm: the service's image and environment, its network (the service's name
    # resolves), and the container is gone afterwards
    before = set(ok(carte.client("ps", "-aq")).split())
    one_off = compose(
        "run", "--rm", "-T", "web", "sh", "-c", "echo $GREETING; nslookup web", cwd=cwd
    )
    assert one_off.returncode == 0, one_off.stderr
    assert one_off.stdout.startswith("hello\n")
    assert set(ok(carte.client("ps", "-aq")).split()) == before
    # restart: the same containers, started again
    started = {r["container_id"]: carte.client("inspect", r["container_id"]).stdout for r in rows}
    ok(compose("restart", "worker", cwd=cwd))
    worker = next(r for r in rows if r["service"] == "worker")
    assert carte.client("inspect", worker["container_id"]).stdout != started[worker["container_id"]]
    # stop keeps the containers, stopped (ps -a shows them exited, the stack does not replace
    # them); start starts the same ones
    webs_before = sorted(r["container_id"] for r in rows if r["service"] == "web")
    stopped = ok(compose("stop", "-t", "1", "web", cwd=cwd))
    assert stopped.count("Stopped") == 2, stopped
    time.sleep(6)  # longer than the stack's poll: a replacement would show by now

    def web_rows(*flags: str) -> list[dict[str, str]]:
        listed = json.loads(ok(compose("ps", *flags, "--format", "json", cwd=cwd)))
        return [r for r in listed if r["service"] == "web"]

    assert web_rows() == []
    kept = web_rows("-a")
    assert sorted(r["container_id"] for r in kept) == webs_before
    assert all(r["status"].startswith("Exited") for r in kept)
    assert ok(compose("start", "web", cwd=cwd)).count("Started") == 2
    again = running(compose, cwd, 3)
    assert sorted(r["container_id"] for r in again if r["service"] == "web") == webs_before
    # up starts stopped containers too, as Compose's
    ok(compose("stop", "-t", "1", "web", cwd=cwd))
    ok(compose("up", "-d", cwd=cwd))
    again = running(compose, cwd, 3)
    assert sorted(r["container_id"] for r in again if r["service"] == "web") == webs_before
    top = ok(compose("top", "worker", cwd=cwd))
    assert "sleep 3600" in top
    images = ok(compose("images", cwd=cwd))
    assert images.splitlines()[0].split()[:2] == ["CONTAINER", "REPOSITORY"]
    assert images.count("busybox") == 3


def test_bad_input_is_one_line(compose: Compose, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = compose("ps", cwd=empty)
    assert missing.returncode == 1
    assert missing.stderr.startswith("carte: no configuration file provided: not found")
    assert len(missing.stderr.splitlines()) == 1
    gone = compose("-f", "nope.yaml", "up", "-d", cwd=empty)
    assert gone.returncode == 1 and "nope.yaml: the Compose file is missing" in gone.stderr
    cwd = project(tmp_path)
    unknown = compose("logs", "nosuch", cwd=cwd)
    assert (unknown.returncode, unknown.stderr) == (1, "carte: no such service: nosuch\n")
    flag = compose("up", "--bogus", cwd=cwd)
    assert (flag.returncode, flag.stderr) == (
        125,
        "unknown flag: --bogus\nSee 'carte compose up --help'.\n",
    )
    assert "Traceback" not in flag.stderr + unknown.stderr + missing.stderr


def test_warnings_reach_the_user(compose: Compose, carte: Daemon, tmp_path: Path) -> None:
    """A published port on an address the host does not have (nothing can reach it) and an
    unset variable: one WARNING line each, from apply and up; a loopback port: none."""
    text = FILE.replace("127.0.0.1:18931:8080", "10.255.77.1:18932:8080").replace(
        "GREETING: hello", "GREETING: ${NOT_SET_ANYWHERE}"
    )
    cwd = project(tmp_path, text=text)
    port = (
        'WARNING: service "web": port "10.255.77.1:18932:8080/tcp" is bound to 10.255.77.1, '
        "which is not an address of this host, so nothing can reach it; publish on 0.0.0.0, "
        "127.0.0.1 or one of the host's addresses\n"
    )
    unset = 'WARNING: variable "NOT_SET_ANYWHERE" is not set; using ""\n'
    dry = carte.client("apply", "--dry-run", "-f", str(cwd / "compose.yaml"))
    assert dry.returncode == 0 and dry.stderr == unset + port
    up = compose("up", "-d", cwd=cwd)
    assert up.returncode == 0 and up.stderr == unset + port
    running(compose, cwd, 3)
    clean = carte.client(
        "apply", "--dry-run", "-f", str(project(tmp_path, "tidy") / "compose.yaml")
    )
    assert clean.returncode == 0 and clean.stderr == ""


def test_shm_size_group_add_and_domainname(compose: Compose, tmp_path: Path) -> None:
    cwd = project(
        tmp_path,
        "shm",
        "services:\n  big:\n    image: busybox\n    command: [sleep, '600']\n"
        "    shm_size: 96m\n    group_add: [1234]\n    domainname: example.org\n",
    )
    assert compose("up", "-d", cwd=cwd).returncode == 0
    running(compose, cwd, 1)
    inside = ok(compose("exec", "big", "df", "-k", "/dev/shm", cwd=cwd))
    assert inside.strip().splitlines()[-1].split()[1] == "98304"  # KiB
    assert "1234" in ok(compose("exec", "big", "id", "-G", cwd=cwd)).split()
    domain = ok(compose("exec", "big", "cat", "/proc/sys/kernel/domainname", cwd=cwd))
    assert domain.strip() == "example.org"
    assert compose("down", cwd=cwd).returncode == 0
