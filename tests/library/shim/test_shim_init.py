"""Carte's init (`carte init -- CMD`): exit statuses, signal forwarding, zombie reaping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import carte

REPO = str(Path(carte.__file__).resolve().parent.parent)


def _init(*argv: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "carte", "init", "--", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_for(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_exit_code_and_signal_status_are_passed_on() -> None:
    with _init("sh", "-c", "exit 3") as proc:
        assert proc.wait(10) == 3
    with _init("sh", "-c", "kill -KILL $$") as proc:
        assert proc.wait(10) == 137
    with _init("/nonexistent/cmd") as missing:
        assert missing.wait(10) == 127
        assert missing.stderr is not None
        assert missing.stderr.read().decode().count("\n") == 1, "one line, no traceback"


def test_sigterm_is_forwarded_to_the_child() -> None:
    with _init(
        "sh", "-c", 'trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.05; done'
    ) as proc:
        _check_term_forwarded(proc)


def _check_term_forwarded(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 7
    assert proc.stdout.read() == b"got TERM\n"


def test_orphaned_children_are_reaped_no_zombies_left() -> None:
    script = 'for i in 1 2 3 4; do (sh -c "exit 0" &); done; echo ready; exec sleep 30'
    with _init("sh", "-c", script) as proc:
        _check_no_zombies(proc)


def _check_no_zombies(proc: subprocess.Popen[bytes]) -> None:
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        # Orphans were re-parented to init; once they exit only the sleep remains, reaped.
        _wait_for(lambda: len(_children(proc.pid)) == 1, "orphans to be reaped")
        assert all(_state(child) != "Z" for child in _children(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
