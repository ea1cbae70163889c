"""Compose options and verbs Compose users type beside the daily ones, against a real daemon:
`--env-file` (the shell's variables still win; a missing file is one line, nothing made),
`compose ls` (every project with its replicas' states) and `compose version`."""

from __future__ import annotations

import json
from pathlib import Path

from support.containers import ok, wait_for
from support.daemon import Daemon
from test_compose_verbs import Compose, project

FILE = """\
services:
  app:
    image: busybox
    command: ["sh", "-c", "echo tier=$$TIER; exec sleep 3600"]
    environment:
      TIER: ${TIER:-none}
"""


def test_env_file_and_ls(carte: Daemon, compose: Compose, tmp_path: Path) -> None:
    directory = project(tmp_path, "billing", FILE)
    (directory / ".env").write_text("TIER=dotenv\n")
    (directory / "staging.env").write_text("# staging\nTIER=staging\n")
    shown = ok(compose("--env-file", "staging.env", "config", cwd=directory))
    assert "TIER: staging" in shown
    shell = compose("--env-file", "staging.env", "config", cwd=directory, env={"TIER": "shell"})
    assert "TIER: shell" in ok(shell)
    missing = compose("--env-file", "nope.env", "up", "-d", cwd=directory)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "carte: --env-file nope.env: No such file or directory; check the path"
    )
    assert json.loads(ok(carte.client("--format", "json", "stack", "ls"))) == []  # nothing made
    ok(compose("--env-file", "staging.env", "up", "-d", cwd=directory))
    wait_for(lambda: "tier=staging" in compose("logs", cwd=directory).stdout, 20)
    # compose ls: the project, its replicas' states, its file
    lines = ok(compose("ls", cwd=tmp_path)).splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "CONFIG", "FILES"]
    assert lines[1].split() == ["billing", "running(1)", "compose.yaml"]
    assert ok(compose("ls", "-q", cwd=tmp_path)).split() == ["billing"]
    rows = json.loads(ok(compose("ls", "--format", "json", cwd=tmp_path)))
    assert rows == [{"Name": "billing", "Status": "running(1)", "ConfigFiles": "compose.yaml"}]
    assert ok(compose("version", cwd=tmp_path)).startswith("Carte compose version ")
