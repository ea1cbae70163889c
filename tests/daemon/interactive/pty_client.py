"""Drive the Carte client through a real pseudo-terminal, as a person at a terminal would.

The client runs in its own session with the pty's slave as its controlling terminal, so
resizing the master sends it SIGWINCH and raw mode is really set on a terminal.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Sequence


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyClient:
    """A client process on a pty; `expect` reads its screen output, `send` types."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], rows: int = 24, cols: int = 80):
        self.master, self.slave = os.openpty()
        set_size(self.master, rows, cols)
        self.saved_attrs = termios.tcgetattr(self.slave)
        slave = self.slave

        def controlling_terminal() -> None:
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        self.seen = b""

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, text: bytes, timeout: float = 20.0) -> bytes:
        """Read until `text` appears in what was printed since the last match; returns it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; screen: {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"client ended before {text!r}; screen: {self.seen!r}")
                self.seen += chunk
        before, _, after = self.seen.partition(text)
        self.seen = after
        return before + text

    def is_raw(self) -> bool:
        """Whether the client has put its terminal in raw mode (no echo, no line editing)."""
        return not termios.tcgetattr(self.slave)[3] & (termios.ECHO | termios.ICANON)

    def resize(self, rows: int, cols: int) -> None:
        set_size(self.master, rows, cols)

    def wait(self, timeout: float = 20.0) -> int:
        """The client's exit code; keeps reading the screen so the client never blocks."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"client did not exit; screen: {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)
