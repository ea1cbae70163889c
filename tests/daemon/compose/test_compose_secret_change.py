"""A changed secret or config in the Compose file replaces the replicas that mount it on the
next `carte compose up`, as Compose recreates their containers; an unchanged one leaves them
running. So does a changed env_file (the variables it sets; a comment alone changes
nothing). Checked by reading the file or the variable inside the new replica, against a real
daemon."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.containers import ok, wait_for
from support.daemon import Daemon

Compose = Callable[..., subprocess.CompletedProcess[str]]

FILE = """\
services:
  app:
    image: busybox
    command: ["sleep", "3600"]
    secrets: [token]
    configs:
      - source: settings
        target: /etc/app.conf
  other:
    image: busybox
    command: ["sleep", "3600"]
secrets:
  token:
    file: ./token.txt
configs:
  settings:
    content: "level=${LEVEL}"
"""


def _replicas(compose: Compose, cwd: Path) -> dict[str, str]:
    """service -> the id of its one running replica, once both run."""
    found: dict[str, str] = {}

    def both() -> bool:
        rows = json.loads(ok(compose("ps", "--format", "json", cwd=cwd)))
        found.clear()
        found.update({r["service"]: r["container_id"] for r in rows if r["status"][:2] == "Up"})
        return len(rows) == 2 and len(found) == 2

    wait_for(both, 60, "one running replica of each service")
    return dict(found)


def _up(compose: Compose, project: Path, files: dict[str, str], **env: str) -> dict[str, str]:
    """Write the project's `files`, `compose up -d` it; its replicas once both run."""
    project.mkdir()
    for name, text in files.items():
        (project / name).write_text(text)
    ok(compose("up", "-d", cwd=project, env=env))
    return _replicas(compose, project)


def test_changed_secret_or_config_replaces_its_replicas(
    compose: Compose, carte: Daemon, tmp_path: Path
) -> None:
    cwd = tmp_path / "vault"
    before = _up(compose, cwd, {"compose.yaml": FILE, "token.txt": "first"}, LEVEL="1")
    read = ["cat", "/run/secrets/token", "/etc/app.conf"]
    assert ok(carte.client("exec", before["app"], *read)) == "firstlevel=1"

    same = ok(compose("up", "-d", cwd=cwd, env={"LEVEL": "1"}))
    assert " Service app  Running" in same
    assert _replicas(compose, cwd) == before

    (cwd / "token.txt").write_text("second")
    changed = ok(compose("up", "-d", cwd=cwd, env={"LEVEL": "1"}))
    assert " Service app  Recreated" in changed and " Service other  Running" in changed
    wait_for(lambda: _replicas(compose, cwd)["app"] != before["app"], 60, "app replaced")
    after = _replicas(compose, cwd)
    assert after["other"] == before["other"]
    assert ok(carte.client("exec", after["app"], *read)) == "secondlevel=1"

    ok(compose("up", "-d", cwd=cwd, env={"LEVEL": "2"}))  # a config's content, interpolated
    wait_for(lambda: _replicas(compose, cwd)["app"] != after["app"], 60, "app replaced again")
    last = _replicas(compose, cwd)["app"]
    assert ok(carte.client("exec", last, *read)) == "secondlevel=2"


ENV_FILE = """\
services:
  app:
    image: busybox
    command: ["sleep", "3600"]
    env_file: app.env
  other:
    image: busybox
    command: ["sleep", "3600"]
"""


def test_changed_env_file_replaces_its_replicas(
    compose: Compose, carte: Daemon, tmp_path: Path
) -> None:
    cwd = tmp_path / "envs"
    before = _up(compose, cwd, {"compose.yaml": ENV_FILE, "app.env": "MODE=first\n"})
    assert ok(carte.client("exec", before["app"], "sh", "-c", "echo $MODE")) == "first\n"

    (cwd / "app.env").write_text("# the same variables\nMODE=first\n")
    assert " Service app  Running" in ok(compose("up", "-d", cwd=cwd))
    assert _replicas(compose, cwd) == before

    (cwd / "app.env").write_text("MODE=second\n")
    changed = ok(compose("up", "-d", cwd=cwd))
    assert " Service app  Recreated" in changed and " Service other  Running" in changed
    wait_for(lambda: _replicas(compose, cwd)["app"] != before["app"], 60, "app replaced")
    after = _replicas(compose, cwd)
    assert after["other"] == before["other"]
    assert ok(carte.client("exec", after["app"], "sh", "-c", "echo $MODE")) == "second\n"
