"""`carte run --init` end to end: PID 1 is Carte's init, which reaps orphaned zombies and
forwards SIGTERM (the command dies of it: exit 143); without --init the same commands leave a
zombie and ignore SIGTERM (Docker's behaviour without --init)."""

from __future__ import annotations

import time

from lifecycle_lab import NO_NET, exec_ok
from support.containers import inspect, ok, wait_for
from support.daemon import Daemon

# The inner shell exits at once; its `sleep 0.1` child is orphaned, re-parented to PID 1 and
# becomes a zombie unless PID 1 reaps it.
ORPHAN_MAKER = ["sh", "-c", "sh -c 'sleep 0.1 & exit 0'; exec sleep 1000"]


def _zombies(daemon: Daemon, ref: str) -> int:
    stats = exec_ok(daemon, ref, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null")
    return sum(1 for line in stats.splitlines() if line.split(") ", 1)[-1].startswith("Z"))


def test_init_is_pid_1_and_reaps_orphans(carte: Daemon) -> None:
    ok(carte.client("run", "-d", *NO_NET, "--init", "--name", "reaper", "busybox", *ORPHAN_MAKER))
    pid1 = exec_ok(carte, "reaper", "cat", "/proc/1/cmdline").replace("\0", " ")
    assert "sleep" not in pid1, "the command itself is PID 1"
    table = exec_ok(carte, "reaper", "ps", "-o", "pid,ppid,args").splitlines()
    assert any(row.split()[1:] == ["1", "sleep", "1000"] for row in table), table
    time.sleep(0.5)  # the orphan's `sleep 0.1` is long over
    assert _zombies(carte, "reaper") == 0


def test_without_init_the_orphan_stays_a_zombie(carte: Daemon) -> None:
    ok(carte.client("run", "-d", *NO_NET, "--name", "noreaper", "busybox", *ORPHAN_MAKER))
    wait_for(lambda: _zombies(carte, "noreaper") == 1, what="a zombie under sleep as PID 1")


def test_init_forwards_sigterm(carte: Daemon) -> None:
    ok(
        carte.client(
            "run", "-d", *NO_NET, "--init", "--name", "forwarded", "busybox", "sleep", "1000"
        )
    )
    started = time.monotonic()
    ok(carte.client("stop", "-t", "8", "forwarded"))
    assert time.monotonic() - started < 5, "SIGTERM did not reach the command; SIGKILL did"
    state = inspect(carte, "forwarded")["state"]
    assert state["exit_code"] == 143


def test_without_init_pid_1_ignores_sigterm(carte: Daemon) -> None:
    ok(carte.client("run", "-d", *NO_NET, "--name", "deaf", "busybox", "sleep", "1000"))
    ok(carte.client("stop", "-t", "1", "deaf"))
    assert inspect(carte, "deaf")["state"]["exit_code"] == 137
