"""Reading what a process writes to a pseudo-terminal, from the test's (master) side."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from typing import Any

__all__ = ["read_until", "shell_on_a_pty"]


def read_until(fd: int, wanted: bytes, seconds: float = 20.0) -> bytes:
    """Read the terminal master `fd` until `wanted` shows up; all that was read. Fails after
    `seconds`, or when the terminal closes first (EOF, or EIO once its last slave is closed)."""
    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {wanted!r}; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        assert chunk, f"the terminal closed before {wanted!r}; got {seen!r}"
        seen += chunk
    return seen


def shell_on_a_pty(argv: list[str], exit_code: int, seconds: float = 30.0, **popen: Any) -> bytes:
    """Start `argv`, a shell, on a new pseudo-terminal; once it prompts, have it print its `tty`
    and exit with `exit_code`, which it must. What it wrote; it is killed if still running."""
    master, replica = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=replica, stdout=replica, stderr=replica, start_new_session=True, **popen
    )
    os.close(replica)
    try:
        seen = read_until(master, b"# ", seconds)
        os.write(master, f"tty; echo marker-$((6*7)); exit {exit_code}\n".encode())
        seen += read_until(master, b"marker-42", seconds)
        assert process.wait(timeout=seconds) == exit_code
        return seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
