"""`compose up --wait` and `compose ps --services`, as Compose users type them in CI scripts,
against a real daemon: --wait returns once every service runs (healthy when it has a
healthcheck; a one-shot exited 0 counts as done) and fails in one line, exit 1, when a
service turns unhealthy, exits with another code, or the --wait-timeout passes."""

from __future__ import annotations

import json
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from test_compose_verbs import Compose, project

FILE = """\
services:
  db:
    image: busybox
    command: ["sh", "-c", "sleep 2; touch /tmp/up; exec sleep 3600"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/up"]
      interval: 1s
  web:
    image: busybox
    command: ["httpd", "-f", "-p", "80"]
  migrate:
    image: busybox
    command: ["true"]
    restart: "no"
"""

SICK = """\
services:
  sick:
    image: busybox
    command: ["sleep", "3600"]
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      retries: 1
"""


def test_up_wait_returns_when_healthy(carte: Daemon, compose: Compose, tmp_path: Path) -> None:
    directory = project(tmp_path, "shop", FILE)
    up = compose("up", "--wait", "--wait-timeout", "60", cwd=directory)
    assert up.returncode == 0, up.stderr
    assert " Service db  Ready" in up.stdout.splitlines()
    # the moment it returns, the healthcheck has passed and the one-shot is done
    rows = {
        r["service"]: r
        for r in json.loads(ok(compose("ps", "-a", "--format", "json", cwd=directory)))
    }
    assert "(healthy)" in rows["db"]["status"], rows["db"]
    assert rows["migrate"]["status"].startswith("Exited (0)")
    assert rows["web"]["status"].startswith("Up")
    assert ok(compose("ps", "--services", cwd=directory)).split() == ["db", "web"]
    assert ok(compose("ps", "-a", "--services", cwd=directory)).split() == ["db", "migrate", "web"]


def test_up_wait_fails_on_unhealthy_and_timeout(
    carte: Daemon, compose: Compose, tmp_path: Path
) -> None:
    directory = project(tmp_path, "sickly", SICK)
    up = compose("up", "--wait", cwd=directory, timeout=60)
    assert up.returncode == 1
    assert up.stderr.splitlines()[-1].startswith("carte: service sick: sickly_sick_1")
    assert up.stderr.rstrip().endswith("is unhealthy") and "Traceback" not in up.stderr
    ok(compose("down", cwd=directory))
    # a healthcheck whose first run is 30 s away: still starting when the timeout passes
    (directory / "compose.yaml").write_text(SICK.replace("interval: 1s", "interval: 30s"))
    up = compose("up", "--wait", "--wait-timeout", "1.5", cwd=directory, timeout=60)
    assert up.returncode == 1
    assert up.stderr.strip() == "carte: timed out after 1.5 s waiting for: sick"
