"""Reading what a process writes to a pseudo-terminal, from the test's (master) side."""

from __future__ import annotations

import os
import select
import time

__all__ = ["read_until"]


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
