"""Helpers for the lifecycle tests: exec through the API, and reading `carte events` lines."""

from __future__ import annotations

import subprocess
import threading

from support.daemon import Daemon

# Lifecycle tests run their containers without a network: what they test does not need one,
# and the network handler's own tests cover attaching (and its restarts).
NO_NET = ("--network", "none")


def exec_ok(daemon: Daemon, ref: str, *cmd: str) -> str:
    """Run a command in the container through the API (POST /v1/commands/ExecInContainer);
    its output. Fails the test unless it exits 0."""
    reply = daemon.command_("ExecInContainer", ref=ref, cmd=list(cmd))
    assert reply.status == 200, reply.body
    result = reply.json()["result"]
    assert result["exit_code"] == 0, result
    return str(result["output"])


def event_lines(daemon: Daemon, *args: str, until: str, timeout: float = 10.0) -> list[str]:
    """Lines `carte events ARGS` prints (it follows forever, as Docker's does) up to and
    including the first that contains `until`; fails the test after `timeout` seconds."""
    process = subprocess.Popen(
        [*daemon.command, "--host", f"unix://{daemon.socket}", "events", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=daemon.env,
    )
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if until in line:
                return lines
    finally:
        timer.cancel()
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    raise AssertionError(f"carte events printed no line with {until!r}:\n" + "\n".join(lines))
