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


def test_up_detached_returns_started(carte: Daemon, compose: Compose, tmp_path: Path) -> None:
    """`up -d && exec` as CI scripts chain them: up -d returns once the replicas run (and a
    one-shot service that already exited does not hold it up); kill, pause and unpause."""
    text = FILE + '  once:\n    image: busybox\n    command: ["true"]\n    restart: "no"\n'
    directory = project(tmp_path, "chained", text)
    ok(compose("up", "-d", cwd=directory))
    ran = compose("exec", "-T", "app", "sh", "-c", "exit 4", cwd=directory)
    assert ran.returncode == 4, ran.stderr
    assert ok(compose("logs", "-n", "1", "--no-log-prefix", "app", cwd=directory)).strip() == (
        "tier=none"
    )
    assert "Paused" in ok(compose("pause", "app", cwd=directory))
    wait_for(lambda: "(Paused)" in compose("ps", "app", cwd=directory).stdout, 10)
    ok(compose("unpause", "app", cwd=directory))
    assert compose("exec", "-T", "app", "true", cwd=directory).returncode == 0
    assert "Killed" in ok(compose("kill", "app", cwd=directory))
    wait_for(lambda: "Up" not in compose("ps", "-a", "app", cwd=directory).stdout, 20)


def test_override_files_are_refused_not_ignored(
    carte: Daemon, compose: Compose, tmp_path: Path
) -> None:
    """Several Compose files are not merged: said in one line (nothing made) rather than the
    last -f read alone; a compose.override.yaml beside the found file gets a warning."""
    directory = project(tmp_path, "layered", FILE)
    (directory / "compose.override.yaml").write_text("services:\n  app:\n    labels: {a: b}\n")
    shown = compose("config", "-q", cwd=directory)
    assert shown.returncode == 0
    assert shown.stderr.startswith("WARNING: compose.override.yaml is not merged into compose.yaml")
    both = compose("-f", "compose.yaml", "-f", "compose.override.yaml", "up", "-d", cwd=directory)
    assert both.returncode == 1 and len(both.stderr.splitlines()) == 1
    assert "compose.yaml + compose.override.yaml: several Compose files are not merged" in (
        both.stderr
    )
    listed = compose("ps", cwd=directory, env={"COMPOSE_FILE": "compose.yaml:other.yaml"})
    assert listed.returncode == 1 and "several Compose files" in listed.stderr
    assert json.loads(ok(carte.client("--format", "json", "stack", "ls"))) == []
    alone = compose(
        "config", "--services", cwd=tmp_path, env={"COMPOSE_FILE": str(directory / "compose.yaml")}
    )
    assert ok(alone).split() == ["app"]


def test_logs_since_and_until(carte: Daemon, compose: Compose, tmp_path: Path) -> None:
    """`compose logs --since/--until` (and `carte logs SERVICE --since`) keep the lines of
    that window only, as Compose; they were refused as unknown flags (or ignored)."""
    directory = project(
        tmp_path, "window", FILE.replace("echo tier=$$TIER", "echo early; sleep 1; echo late")
    )
    ok(compose("up", "-d", cwd=directory))
    wait_for(lambda: "late" in compose("logs", cwd=directory).stdout, 20)
    stamped = ok(compose("logs", "-t", "--no-log-prefix", cwd=directory)).splitlines()
    late = next(line.split()[0] for line in stamped if line.endswith(" late"))
    since = ok(compose("logs", "--no-log-prefix", "--since", late, cwd=directory))
    assert since.split() == ["late"]
    until = ok(compose("logs", "--no-log-prefix", "--until", late, cwd=directory))
    assert until.split() == ["early"]
    assert ok(carte.client("logs", "app", "--since", late)).split()[-1] == "late"
    assert "early" not in ok(carte.client("logs", "app", "--since", late))


CI = """\
services:
  db:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo db up; sleep 3600 & wait"]
  tests:
    image: busybox
    command: ["sh", "-c", "sleep 1; echo tests ran; exit 3"]
"""


def test_up_exit_code_from(carte: Daemon, compose: Compose, tmp_path: Path) -> None:
    """`up --exit-code-from tests` as CI runs a test suite: attached, ends when a container
    exits, stops the others, exits with that service's code (its restart never hides it)."""
    directory = project(tmp_path, "ci", CI)
    ran = compose("up", "--exit-code-from", "tests", cwd=directory, timeout=60)
    assert ran.returncode == 3, ran.stderr
    assert "tests ran" in ran.stdout and "Aborting on container exit..." in ran.stdout
    rows = json.loads(ok(compose("ps", "-a", "--format", "json", cwd=directory)))
    assert [r["status"].split()[0] for r in rows if r["service"] == "db"] == ["Exited"]
    ok(compose("down", cwd=directory))
    ran = compose("up", "--abort-on-container-exit", cwd=directory, timeout=60)
    assert ran.returncode == 3, ran.stderr
    ok(compose("down", cwd=directory))
    ran = compose("up", "--exit-code-from", "db", cwd=directory, timeout=60)
    assert ran.returncode == 0, ran.stderr  # db was stopped, its TERM trap exits 0


def test_run_flags(carte: Daemon, compose: Compose, tmp_path: Path) -> None:
    """`compose run` with the flags Compose users add: -v, -l, -i, --no-deps, -p and
    --service-ports (the service's own ports, long form too)."""
    text = (
        FILE
        + "    ports:\n      - target: 80\n        published: '18244'\n        host_ip: 127.0.0.1\n"
    )
    directory = project(tmp_path, "oneoff", text)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "note").write_text("from the host\n")
    ok(compose("up", "-d", cwd=directory))
    mounted = compose(
        "run", "--rm", "-i", "--no-deps", "-v", f"{tmp_path / 'shared'}:/h:ro", "-l", "job=read",
        "app", "cat", "/h/note", cwd=directory,
    )  # fmt: skip
    assert ok(mounted) == "from the host\n"
    ok(compose(
        "run", "-d", "--name", "side", "--service-ports", "-p", "127.0.0.1:18245:81", "-l",
        "job=side", "app", "sleep", "600", cwd=directory,
    ))  # fmt: skip
    template = '{{index .Config.Labels "job"}}'
    assert ok(carte.client("inspect", "-f", template, "side")).strip() == "side"
    assert sorted(ok(carte.client("port", "side")).splitlines()) == [
        "80/tcp -> 127.0.0.1:18244", "81/tcp -> 127.0.0.1:18245",
    ]  # fmt: skip
