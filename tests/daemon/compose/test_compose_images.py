"""`carte compose build`, `events` and `up` in the foreground, against a real daemon."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from support.containers import ok, wait_for
from support.daemon import Daemon

Compose = Callable[..., subprocess.CompletedProcess[str]]

FILE = """\
services:
  app:
    build: .
    command: ["sh", "-c", "cat /version; exec sleep 3600"]
"""


def test_build_rebuilds_what_run_uses(compose: Compose, carte: Daemon, tmp_path: Path) -> None:
    cwd = tmp_path / "baked"
    cwd.mkdir()
    (cwd / "compose.yaml").write_text(FILE)
    (cwd / "Dockerfile").write_text("FROM busybox\nRUN echo v1 > /version\n")
    ok(compose("up", "-d", cwd=cwd, timeout=180))
    wait_for(lambda: "v1" in compose("logs", "app", cwd=cwd).stdout, 60, "v1 in app's log")
    (cwd / "Dockerfile").write_text("FROM busybox\nRUN echo v2 > /version\n")
    built = compose("build", cwd=cwd, timeout=180)
    assert built.returncode == 0, built.stderr
    assert "naming to baked_app" in built.stderr
    assert ok(compose("run", "--rm", "-T", "app", "cat", "/version", cwd=cwd)) == "v2\n"
    down = compose("down", "--rmi", "local", cwd=cwd)
    assert down.returncode == 0, down.stderr
    assert " Image baked_app  Removed" in down.stdout
    assert "baked_app" not in ok(carte.client("images"))


def test_events_of_the_project_only(compose: Compose, carte: Daemon, tmp_path: Path) -> None:
    cwd = tmp_path / "watched"
    cwd.mkdir()
    (cwd / "compose.yaml").write_text(
        'services:\n  tick:\n    image: busybox\n    command: ["sleep", "3600"]\n'
    )
    ok(compose("up", "-d", cwd=cwd))
    ok(carte.client("run", "-d", "--name", "bystander", "busybox", "sleep", "60"))
    follow = subprocess.Popen(
        [*carte.command, "--host", f"unix://{carte.socket}", "compose", "events", "--json"],
        cwd=cwd, stdout=subprocess.PIPE, text=True, env=carte.env,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        ok(carte.client("restart", "bystander"))
        ok(compose("restart", "tick", cwd=cwd))
        seen: list[dict[str, object]] = []
        stdout = follow.stdout
        reader = threading.Thread(
            target=lambda: seen.extend(json.loads(line) for line in stdout), daemon=True
        )
        reader.start()
        wait_for(
            lambda: any(str(e.get("name", "")).startswith("watched_tick_") for e in seen[:]),
            30,
            "an event of the project's replica",
        )
        assert all("bystander" not in json.dumps(e) for e in seen[:])
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()


def test_up_in_the_foreground_follows_the_logs(carte: Daemon, tmp_path: Path) -> None:
    cwd = tmp_path / "front"
    cwd.mkdir()
    (cwd / "compose.yaml").write_text(
        "services:\n  hello:\n    image: busybox\n"
        '    command: ["sh", "-c", "echo hello from up; exec sleep 3600"]\n'
    )
    attached = subprocess.Popen(
        [*carte.command, "--host", f"unix://{carte.socket}", "compose", "up"],
        cwd=cwd, stdout=subprocess.PIPE, text=True, env=carte.env,
    )  # fmt: skip
    try:
        assert attached.stdout is not None
        lines = []
        while not lines or "hello from up" not in lines[-1]:
            lines.append(attached.stdout.readline())
            assert lines[-1], f"up ended: {lines}"
        assert lines[-1].startswith("front_hello_") and " | hello from up" in lines[-1]
    finally:
        attached.kill()
        attached.wait()
        if attached.stdout is not None:
            attached.stdout.close()
