"""Child processes for the cgroup tests that wait to be moved into a cgroup before they act,
and what the tests measure with them (a raw disk probe, a fork bomb's peak)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from carte.runtime.cgroups import Cgroup, CgroupStats


class PausedChild:
    """A Python child that blocks reading one byte from stdin before it runs ``code``.

    That lets a test move it into a cgroup before it allocates, forks or spins.
    """

    def __init__(self, code: str) -> None:
        prelude = "import os, sys\nsys.stdin.buffer.read(1)\n"
        self.process = subprocess.Popen(
            [sys.executable, "-c", prelude + code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.pid = self.process.pid

    def release(self) -> None:
        """Let the child run its code."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"g")
        self.process.stdin.flush()

    def start_in(self, cgroup: Cgroup) -> None:
        """Move the child into `cgroup`, then let it run its code."""
        cgroup.add_process(self.pid)
        self.release()

    def read_line(self) -> str:
        """One line the child printed (it must flush)."""
        assert self.process.stdout is not None
        return self.process.stdout.readline().decode().strip()

    def wait(self, seconds: float = 20.0) -> int:
        return self.process.wait(seconds)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


DISK_PROBE = """
import stat
node = {node!r}
if not os.path.exists(node):
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev({major}, {minor}))
try:
    os.close(os.open(node, os.O_RDONLY))
    print("opened", flush=True)
except OSError as error:
    print(error.errno, flush=True)
os.close(os.open("/dev/null", os.O_RDWR))
print("null ok", flush=True)
"""


def probe_disk(
    cgroup: Cgroup, spawn: Callable[[str], PausedChild], node: Path, device: tuple[int, int]
) -> tuple[str, str]:
    """What a process in the group gets opening a node it makes for ``device``, then null."""
    child = spawn(DISK_PROBE.format(node=str(node), major=device[0], minor=device[1]))
    child.start_in(cgroup)
    outcome = (child.read_line(), child.read_line())
    assert child.wait() == 0
    return outcome


@contextmanager
def fork_bomb(cgroup: Cgroup) -> Iterator[None]:
    """A busybox shell fork bomb set off inside `cgroup` (the shell waits to be moved there
    before it forks); every task of the group is killed on exit."""
    bomb = subprocess.Popen(
        ["/bin/busybox", "sh", "-c", "read go; bomb() { bomb & bomb; }; bomb"],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        cgroup.add_process(bomb.pid)
        assert bomb.stdin is not None
        bomb.stdin.write(b"go\n")
        bomb.stdin.close()
        yield
        cgroup.kill(signal.SIGKILL)
    finally:
        bomb.kill()
        bomb.wait()


def fork_bomb_peak(stats: Callable[[], CgroupStats], seconds: float = 15.0) -> tuple[int, int]:
    """Sample a cgroup a fork bomb runs in until the kernel refuses a fork; the most tasks it
    held (sampled, or the kernel's high-water mark, which sees bursts sampling misses) and the
    refused forks."""
    highest = 0
    deadline = time.monotonic() + seconds
    while (now := stats()).pids_refused == 0:
        assert time.monotonic() < deadline, "the fork bomb never reached the pids limit"
        highest = max(highest, now.pids_current)
        time.sleep(0.002)
    return max(highest, now.pids_peak, now.pids_current), now.pids_refused


def assert_the_host_answers() -> None:
    """A process starts and ends on the host in under 2 s (a bomb in a group did not starve it)."""
    started = time.monotonic()
    assert subprocess.run(["true"], check=False).returncode == 0
    assert time.monotonic() - started < 2.0
