"""Child processes for the cgroup tests that wait to be moved into a cgroup before they act."""

from __future__ import annotations

import subprocess
import sys


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
