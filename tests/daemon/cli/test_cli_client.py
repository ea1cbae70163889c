"""The client as a user runs it: a subprocess, a real daemon or none, output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.daemon import DaemonFactory, make_workdir

HEAVY = ("trio", "quart", "quart_trio", "hypercorn", "werkzeug")


def carte(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carte", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_no_daemon_is_one_line_with_where_and_how(tmp_path: Path) -> None:
    socket = tmp_path / "nobody.sock"
    for command in (["info"], ["events"], ["version"]):
        result = carte("--host", f"unix://{socket}", *command)
        assert result.returncode == 1, command
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"unix://{socket}" in lines[0]
        assert "carte daemon" in lines[0] and "install.sh" in lines[0]
        assert "Traceback" not in result.stderr


def test_carte_host_environment_variable(daemons: DaemonFactory) -> None:
    daemon = daemons()
    env = dict(os.environ, CARTE_HOST=f"unix://{daemon.socket}")
    result = carte("--format", "json", "info", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["socket"] == str(daemon.socket)


def test_usage_errors_are_dockers_two_lines_and_exit_125() -> None:
    """A bad flag or argument, on any command: the problem, then where help is, exit 125."""
    cases = [
        (["run", "--foo", "busybox"], "unknown flag: --foo", "carte run"),
        (["ps", "--foo=1"], "unknown flag: --foo", "carte ps"),
        (["run", "-Z", "busybox"], "unknown shorthand flag: 'Z' in -Z", "carte run"),
        (["--bogus"], "unknown flag: --bogus", "carte"),
        (["network", "create", "--nope", "x"], "unknown flag: --nope", "carte network create"),
        (["compose", "up", "--bogus"], "unknown flag: --bogus", "carte compose up"),
        (["nosuch"], "carte: 'nosuch' is not a carte command", "carte"),
        (["events", "--filter", "color=red"], "carte: ", "carte events"),
        (["events", "--since", "last tuesday"], 'carte: --since "last tuesday"', "carte events"),
        (["--host", "ftp://x", "info"], 'carte: host "ftp://x"', "carte"),
    ]
    for args, problem, prog in cases:
        result = carte(*args)
        assert result.returncode == 125, (args, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith(problem), (args, result.stderr)
        assert lines[1] == f"See '{prog} --help'.", (args, result.stderr)
    for flag in ("--help", "-h"):
        helped = carte(flag)
        assert helped.returncode == 0 and helped.stdout.startswith("usage: carte")
        assert "compose" in helped.stdout


def test_help_lists_every_command() -> None:
    result = carte("--help")
    assert result.returncode == 0
    for command in ("daemon", "version", "info", "events", "system"):
        assert f"    {command}" in result.stdout
    system = carte("system", "--help")
    assert "check" in system.stdout


def test_version_and_info_against_a_daemon(daemons: DaemonFactory) -> None:
    daemon = daemons()
    version = daemon.client("version")
    assert version.returncode == 0, version.stderr
    assert "Client:" in version.stdout and "Server:" in version.stdout
    as_json = json.loads(daemon.client("--format", "json", "version").stdout)
    assert as_json["server"]["api_version"] == as_json["client"]["api_version"] == "1"

    info = daemon.client("info")
    assert info.returncode == 0, info.stderr
    assert f"Storage root: {daemon.root}" in info.stdout
    rows = {line.split()[0]: line.split() for line in info.stdout.splitlines() if line}
    assert rows["api"][1] == "running"
    assert "no url configured" in info.stdout


def test_version_without_daemon_still_shows_the_client(tmp_path: Path) -> None:
    result = carte("--host", f"unix://{tmp_path}/none.sock", "version")
    assert result.returncode == 1
    assert "Client:" in result.stdout and "Server:" not in result.stdout


def test_events_since_with_filter(daemons: DaemonFactory) -> None:
    daemon = daemons()
    process = subprocess.Popen(
        [
            *daemon.command,
            "--host",
            f"unix://{daemon.socket}",
            "events",
            "--since",
            "1h",
            "--filter",
            "type=daemon.started",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        process.terminate()
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    assert " DaemonStarted daemon " in line
    assert f"pid={daemon.process.pid}" in line  # type: ignore[union-attr]


def test_system_check_reports_each_feature_with_fixes() -> None:
    result = carte("system", "check")
    for feature in (
        "namespace pid",
        "namespace user",
        "overlayfs",
        "cgroup layout",
        "cgroup controller memory",
        "nftables binary",
        "nftables kernel",
        "seccomp kernel",
        "libseccomp",
        "veth",
        "vxlan (overlay networks)",
        "wireguard (encrypted overlay)",
    ):
        assert feature in result.stdout, feature
    checks = json.loads(carte("--format", "json", "system", "check").stdout)
    missing = [c for c in checks if c["required"] and not c["ok"]]
    assert result.returncode == (1 if missing else 0)
    assert all(c["fix"] for c in checks), "every check carries its fix"
    # The encryption row says what the kernel does: a WireGuard link can be made exactly when ok.
    made = subprocess.run(
        ["ip", "link", "add", "cwgcheck0", "type", "wireguard"], capture_output=True
    )
    subprocess.run(["ip", "link", "del", "cwgcheck0"], capture_output=True)
    wireguard = next(c for c in checks if c["feature"] == "wireguard (encrypted overlay)")
    assert wireguard["ok"] == (made.returncode == 0) and not wireguard["required"]


def test_system_check_works_without_a_daemon(tmp_path: Path) -> None:
    result = carte("--host", f"unix://{tmp_path}/none.sock", "system", "check")
    assert "no daemon" not in result.stderr
    assert "overlayfs" in result.stdout


def test_client_imports_neither_trio_nor_quart_nor_hypercorn(daemons: DaemonFactory) -> None:
    daemon = daemons()
    # The client leaves through os._exit; the probe wraps it to look at sys.modules first.
    probe = (
        "import os, sys\n"
        "real_exit = os._exit\n"
        "def report(code):\n"
        f"    heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "    print('HEAVY', heavy, code, file=sys.stderr, flush=True)\n"
        "    real_exit(code)\n"
        "os._exit = report\n"
        "from carte.cli import main\n"
        f"sys.argv = ['carte', '--host', 'unix://{daemon.socket}', 'info']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert "HEAVY [] 0" in result.stderr, result.stderr


def test_client_importtime_shows_no_server_stack(daemons: DaemonFactory) -> None:
    daemon = daemons()
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "carte",
            "--host",
            f"unix://{daemon.socket}",
            "version",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_daemon_restart_is_seen_by_a_new_client(daemons: DaemonFactory) -> None:
    workdir = make_workdir()
    first = daemons(workdir=workdir)
    pid_before = json.loads(first.client("--format", "json", "info").stdout)["pid"]
    assert first.stop() == 0
    assert first.client("info").returncode == 1
    started = time.monotonic()
    second = daemons(workdir=workdir)
    assert time.monotonic() - started < 20
    pid_after = json.loads(second.client("--format", "json", "info").stdout)["pid"]
    assert pid_after != pid_before
    daemons.workdirs.append(workdir)


def test_command_index_matches_what_modules_register() -> None:
    """COMMAND_MODULES names each module's command words, so the client imports only one."""
    from carte.cli.commands import Commands
    from carte.cli.parser import COMMAND_MODULES

    for module_name, words in COMMAND_MODULES.items():
        registered = Commands()
        __import__(module_name, fromlist=["register"]).register(registered)
        assert tuple(registered.entries) == words, module_name


def test_one_command_imports_only_its_module(tmp_path: Path) -> None:
    probe = (
        "import os, sys\n"
        "real_exit = os._exit\n"
        "def report(code):\n"
        "    loaded = sorted(m for m in sys.modules if m.startswith('carte.cli.commands.')"
        " and '._' not in m)\n"
        "    print('LOADED', loaded, file=sys.stderr, flush=True)\n"
        "    real_exit(code)\n"
        "os._exit = report\n"
        "from carte.cli import main\n"
        f"sys.argv = ['carte', '--host', 'unix://{tmp_path}/none.sock', 'version']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "LOADED ['carte.cli.commands.system']" in result.stderr, result.stderr
