"""logs (tail, timestamps, follow, rotation), rename, update, pause/unpause, prune, exec, and
the image commands, against a real daemon."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from support.containers import inspect, memory_cgroup, ok, run_detached
from support.daemon import Daemon


def test_logs_tail_timestamps_and_streams(carte: Daemon) -> None:
    script = "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2"
    ok(carte.client("run", "--name", "talker", "busybox", "sh", "-c", script))
    logs = carte.client("logs", "talker")
    assert logs.stdout == "".join(f"line{i}\n" for i in range(1, 6))
    assert logs.stderr == "oops\n"
    assert ok(carte.client("logs", "--tail", "2", "talker")) == "line5\n"
    stamped = ok(carte.client("logs", "-t", "--tail", "3", "talker")).splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["line4", "line5"]
    assert all(line[:4].isdigit() and "T" in line.split(" ")[0] for line in stamped)
    assert ok(carte.client("logs", "--since", "1h", "talker")).count("line") == 5
    assert ok(carte.client("logs", "--until", "1h", "talker")) == ""


def test_logs_follow_ends_when_the_container_stops(carte: Daemon) -> None:
    run_detached(
        carte,
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick$i; sleep 0.3; done",
    )
    started = time.monotonic()
    followed = ok(carte.client("logs", "-f", "ticker"))
    assert followed == "tick1\ntick2\ntick3\n"
    assert time.monotonic() - started < 15


def test_log_rotation_by_log_opt(carte: Daemon) -> None:
    script = "i=0; while [ $i -lt 400 ]; do echo line-$i-padding-padding-padding; i=$((i+1)); done"
    ok(
        carte.client(
            "run",
            "--name",
            "chatty",
            "--log-opt",
            "max-size=4k",
            "--log-opt",
            "max-file=2",
            "busybox",
            "sh",
            "-c",
            script,
        )
    )
    log_path = Path(inspect(carte, "chatty")["log_path"])
    files = sorted(p.name for p in log_path.parent.iterdir() if p.name.startswith(log_path.name))
    assert files == [log_path.name, log_path.name + ".1"]
    assert sum((log_path.parent / name).stat().st_size for name in files) < 4 * 4096
    lines = ok(carte.client("logs", "chatty")).splitlines()
    assert lines[-1] == "line-399-padding-padding-padding"
    assert 0 < len(lines) < 400


def test_rename(carte: Daemon) -> None:
    container_id = ok(carte.client("create", "--name", "before", "busybox", "true")).strip()
    ok(carte.client("create", "--name", "taken", "busybox", "true"))
    ok(carte.client("rename", "before", "after"))
    assert inspect(carte, "after")["id"] == container_id
    assert carte.client("inspect", "before").returncode == 1
    clash = carte.client("rename", "after", "taken")
    assert clash.returncode == 1 and "already in use" in clash.stderr


def test_update_memory_of_a_running_container(carte: Daemon) -> None:
    container_id = run_detached(carte, "-m", "64m", "busybox", "sleep", "100")
    ok(carte.client("update", "--memory", "96m", container_id[:12]))
    limit = memory_cgroup(container_id) / "memory.limit_in_bytes"
    assert int(limit.read_text()) == 96 * 1024 * 1024
    assert inspect(carte, container_id)["config"]["resources"]["memory"] == 96 * 1024 * 1024


def test_pause_and_unpause_freeze_the_cgroup(carte: Daemon) -> None:
    container_id = run_detached(carte, "--name", "p", "busybox", "sleep", "100")
    freezer = Path("/sys/fs/cgroup/freezer/carte") / container_id / "freezer.state"
    ok(carte.client("pause", "p"))
    assert freezer.read_text().strip() == "FROZEN"
    assert "(Paused)" in ok(carte.client("ps"))
    assert inspect(carte, "p")["state"]["status"] == "paused"
    ok(carte.client("unpause", "p"))
    assert freezer.read_text().strip() == "THAWED"
    assert inspect(carte, "p")["state"]["status"] == "running"
    ok(carte.client("stop", "-t", "1", "p"))


def test_container_prune_removes_only_stopped_ones(carte: Daemon) -> None:
    stopped = run_detached(carte, "busybox", "true")
    running = run_detached(carte, "busybox", "sleep", "100")
    ok(carte.client("wait", stopped))
    pruned = ok(carte.client("container", "prune", "-f"))
    assert stopped in pruned and running not in pruned
    assert ok(carte.client("ps", "-aq", "--no-trunc")).split() == [running]


def test_exec_in_container_command(carte: Daemon) -> None:
    run_detached(carte, "--name", "ex", "-e", "GREETING=hello", "busybox", "sleep", "100")
    reply = carte.command_("ExecInContainer", ref="ex", cmd=["sh", "-c", "echo $GREETING; exit 4"])
    assert reply.status == 200, reply.body
    assert reply.json()["result"] == {"exit_code": 4, "output": "hello\n", "timed_out": False}
    slow = carte.command_("ExecInContainer", ref="ex", cmd=["sleep", "30"], timeout=0.5)
    assert slow.json()["result"]["timed_out"] is True
    ok(carte.client("kill", "ex"))
    ok(carte.client("wait", "ex"))
    stopped = carte.command_("ExecInContainer", ref="ex", cmd=["true"])
    assert stopped.status == 409 and "not running" in stopped.json()["error"]["message"]


def test_resolve_container_for_other_handlers(carte: Daemon) -> None:
    container_id = run_detached(carte, "--name", "where", "busybox", "sleep", "100")
    located = carte.command_("ResolveContainer", ref="where").json()["result"]
    assert located["id"] == container_id and located["status"] == "running"
    assert Path(located["shim_socket"]).is_socket()
    assert Path(located["upper_dir"]).is_dir() and located["lower_dirs"]


def test_images_tag_inspect_rmi(carte: Daemon, busybox_tar: Path) -> None:
    ok(carte.client("tag", "busybox", "mine:v1"))
    table = ok(carte.client("images"))
    assert "mine" in table and "v1" in table
    details = json.loads(ok(carte.client("image", "inspect", "mine:v1")))[0]
    assert "mine:v1" in details["repo_tags"] and "busybox:latest" in details["repo_tags"]
    ok(carte.client("create", "--name", "user", "mine:v1", "true"))
    assert ok(carte.client("rmi", "mine:v1")).strip() == "Untagged: mine:v1"
    busy = carte.client("rmi", "busybox")
    assert busy.returncode == 1 and "used by container" in busy.stderr
    ok(carte.client("rm", "user"))
    ok(carte.client("rmi", "busybox"))
    assert ok(carte.client("images", "-q")) == ""
    ok(carte.client("import", str(busybox_tar), "busybox"))


def test_client_exit_codes_for_missing_containers(carte: Daemon) -> None:
    cases = {
        ("stop", "ghost"): 'no such container: "ghost"',
        ("rm", "ghost"): 'no such container: "ghost"',
        ("logs", "ghost"): 'no such container: "ghost"',
        # As docker inspect: a name no container has may be an image, network or volume.
        ("inspect", "ghost"): 'no such object: "ghost"',
        ("inspect", "--type", "container", "ghost"): 'no such container: "ghost"',
    }
    for args, message in cases.items():
        result = carte.client(*args)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_import_from_stdin_and_a_bad_tar(carte: Daemon, busybox_tar: Path, tmp_path: Path) -> None:
    with busybox_tar.open("rb") as tar:
        piped = subprocess.run(
            [*carte.command, "--host", f"unix://{carte.socket}", "import", "-", "piped:v2"],
            stdin=tar,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("sha256:")
    assert ok(carte.client("run", "--rm", "piped:v2", "echo", "piped")) == "piped\n"
    ok(carte.client("rmi", "piped:v2"))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 100)
    refused = carte.client("import", str(junk), "junk")
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert "junk" not in ok(carte.client("images"))


def test_inspect_format_templates_with_docker_field_names(carte: Daemon) -> None:
    ran = carte.client("run", "--name", "fmt", "-l", "tier=db", "busybox", "sh", "-c", "exit 5")
    assert ran.returncode == 5
    template = "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}} {{json .Config.Labels}}"
    rendered = ok(carte.client("inspect", "-f", template, "fmt")).strip()
    assert rendered == 'exited 5 false {"tier":"db"}'  # compact, as Docker's json
