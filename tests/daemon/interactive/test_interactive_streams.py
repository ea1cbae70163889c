"""exec and run -i without a terminal, attach to a container without one, top and stats,
and the one-line refusals, against a real daemon."""

from __future__ import annotations

import json
import subprocess

from support.containers import ok, wait_for
from support.daemon import Daemon

from carte.cli.websocket import TEXT, WebSocket


def pipe_client(carte: Daemon, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*carte.command, "--host", f"unix://{carte.socket}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=carte.env,
    )


def test_run_i_pipes_stdin_through_cat(carte: Daemon) -> None:
    result = pipe_client(carte, "run", "-i", "--rm", "busybox", "cat", stdin="data\nmore\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "data\nmore\n"


def test_run_i_shell_script_exit_code(carte: Daemon) -> None:
    script = "echo $((6*7))\necho oops >&2\nexit 3\n"
    result = pipe_client(carte, "run", "-i", "--rm", "busybox", "sh", stdin=script)
    assert (result.returncode, result.stdout, result.stderr) == (3, "42\n", "oops\n")


def test_start_ai_feeds_a_created_container_and_returns_its_exit_code(carte: Daemon) -> None:
    script = "read line; echo got $line; exit 4"
    ok(carte.client("create", "-i", "--name", "startai", "busybox", "sh", "-c", script))
    try:
        result = pipe_client(carte, "start", "-ai", "startai", stdin="hello\n")
        assert (result.returncode, result.stdout) == (4, "got hello\n"), result.stderr
        again = pipe_client(carte, "start", "-i", "startai", stdin="twice\n")  # -i alone too
        assert (again.returncode, again.stdout) == (4, "got twice\n"), again.stderr
        both = carte.client("start", "-a", "startai", "other")
        assert both.returncode == 1 and "multiple containers" in both.stderr
    finally:
        ok(carte.client("rm", "-f", "startai"))


def test_exec_separates_streams_and_returns_the_exit_code(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "streams", "busybox", "sleep", "1000"))
    result = carte.client("exec", "streams", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (result.returncode, result.stdout, result.stderr) == (5, "out\n", "err\n")
    piped = pipe_client(carte, "exec", "-i", "streams", "tr", "a-z", "A-Z", stdin="shout\n")
    assert (piped.returncode, piped.stdout) == (0, "SHOUT\n")
    options = carte.client(
        "exec", "-u", "nobody", "-w", "/tmp", "-e", "GREETING=hi", "streams",
        "sh", "-c", "id -u; pwd; echo $GREETING",
    )  # fmt: skip
    assert options.stdout.split() == ["65534", "/tmp", "hi"]
    inherited = carte.client(
        "exec", "-e", "FROM_CLIENT", "streams", "sh", "-c", "echo $FROM_CLIENT",
        env={**carte.env, "FROM_CLIENT": "passed on"},
    )  # fmt: skip
    assert inherited.stdout == "passed on\n"
    missing = carte.client("exec", "streams", "no-such-program")
    assert missing.returncode == 126  # Docker's exec failed (`run` says 127 for this)
    assert "no-such-program" in missing.stderr
    not_executable = carte.client("exec", "streams", "/etc/passwd")
    assert not_executable.returncode == 126


def test_exec_detached_keeps_running(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "detached", "busybox", "sleep", "1000"))
    result = carte.client("exec", "-d", "detached", "sleep", "321")
    assert (result.returncode, result.stdout) == (0, "")
    assert "sleep 321" in ok(carte.client("top", "detached"))


def test_exec_into_a_stopped_container_is_a_409_in_one_line(carte: Daemon) -> None:
    ok(carte.client("create", "--name", "stopped", "busybox", "true"))
    result = carte.client("exec", "stopped", "true")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not running" in lines[0] and "carte start" in lines[0]
    ws = WebSocket.connect(str(carte.socket), "/v1/containers/stopped/exec")
    try:
        ws.send_text(json.dumps({"cmd": ["true"]}))
        messages = []
        while not ws.closed and not messages:
            messages = ws.receive_available()
        opcode, payload = messages[0]
        assert opcode == TEXT
        error = json.loads(payload)
        assert (error["type"], error["status"], error["code"]) == ("error", 409, "conflict")
    finally:
        ws.close()


def test_attach_streams_output_and_the_exit_code(carte: Daemon) -> None:
    script = "while [ ! -e /tmp/go ]; do echo tick; sleep 0.1; done; echo late; exit 7"
    ok(carte.client("run", "-d", "--name", "talker", "busybox", "sh", "-c", script))
    attach = subprocess.Popen(
        [*carte.command, "--host", f"unix://{carte.socket}", "attach", "talker"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=carte.env,
    )
    try:
        assert attach.stdout is not None
        assert attach.stdout.readline() == "tick\n"  # attached: output flows
        ok(carte.client("exec", "talker", "touch", "/tmp/go"))
        out, err = attach.communicate(timeout=30)
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
    assert attach.returncode == 7, err
    assert out.replace("tick\n", "") == "late\n"


def test_attach_to_a_stopped_container_is_refused(carte: Daemon) -> None:
    ok(carte.client("create", "--name", "idle", "busybox", "true"))
    result = carte.client("attach", "idle")
    assert result.returncode == 1
    assert "start it first" in result.stderr and len(result.stderr.splitlines()) == 1


def test_top_lists_the_container_processes(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "toppy", "busybox", "sh", "-c", "sleep 777 & wait"))
    wait_for(lambda: "sleep 777" in ok(carte.client("top", "toppy")), what="sleep in top")
    lines = ok(carte.client("top", "toppy")).splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = [line.split(None, 7)[7] for line in lines[1:]]
    assert "sleep 777" in commands and any(c.startswith("sh -c") for c in commands)
    assert all(line.split()[0] == "root" for line in lines[1:])
    stopped = carte.client("top", "nosuch")
    assert stopped.returncode == 1 and "nosuch" in stopped.stderr


def test_stats_no_stream_reports_memory_limit_and_pids(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "busy", "-m", "64m", "busybox", "sh", "-c",
                    "sleep 500 & sleep 501 & while :; do :; done"))  # fmt: skip
    wait_for(lambda: "sleep 501" in ok(carte.client("top", "busy")), what="both sleeps")
    lines = ok(carte.client("stats", "--no-stream", "busy")).splitlines()
    assert [title.strip() for title in lines[0].split("   ") if title] == [
        "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O",
        "PIDS",
    ]  # fmt: skip
    row = lines[1].split()
    assert row[1] == "busy" and row[-1] == "3"
    assert "/ 64MiB" in lines[1]
    reading = json.loads(ok(carte.client("--format", "json", "stats", "--no-stream", "busy")))[0]
    assert reading["memory_limit"] == 64 * 1024 * 1024 and reading["pids"] == 3
    assert reading["cpu_percent"] > 5.0, "a busy loop must show CPU use"


def test_run_i_with_a_missing_command_exits_127_and_removes_it(carte: Daemon) -> None:
    result = pipe_client(carte, "run", "-i", "--rm", "busybox", "no-such-program", stdin="")
    assert result.returncode == 127
    assert "no-such-program" in result.stderr
    assert ok(carte.client("ps", "-aq")).strip() == ""


def test_run_it_without_a_terminal_is_refused_in_one_line(carte: Daemon) -> None:
    result = pipe_client(carte, "run", "-it", "busybox", "true", stdin="")
    assert result.returncode == 125
    assert result.stderr.strip() == (
        "carte: the input device is not a TTY; drop -t or run from a terminal"
    )
    assert ok(carte.client("ps", "-aq")).strip() == "", "nothing is created"
