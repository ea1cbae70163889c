"""Non-interactive exec through the shim: run a process to completion, output captured.

Used by `ExecInContainer` (health probes, `carte exec` without -i/-t). The process writes into
a pipe this side reads (the shim copies nothing); output is bounded to `MAX_OUTPUT` bytes (the
last bytes are kept, as Docker keeps a probe's tail). Blocking: run it in a worker thread.
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path
from typing import Any

from carte.api.containers import ExecResult
from carte.runtime.shim.client import connect

MAX_OUTPUT = 64 * 1024


def run_exec(
    state_dir: Path, container_id: str, process: dict[str, Any], timeout: float | None
) -> ExecResult:
    """Start `process` (an OCI process object) in the container and wait for it.

    After `timeout` seconds the process is killed (SIGKILL) and `timed_out` is set. Raises
    `Unavailable` when the shim is not running and `ShimError` when it refuses (e.g. the
    container is not running, or the command does not exist).
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with connect(state_dir, container_id) as client:
            try:
                pid, _ = client.exec(process, (null, write_end, write_end))
            finally:
                os.close(write_end)
                write_end = -1
            output, timed_out = _read_until_eof(read_end, pid, timeout)
            exit_code = client.wait_exec()
    finally:
        for fd in (read_end, write_end, null):
            if fd >= 0:
                os.close(fd)
    text = output.decode(errors="replace")
    return ExecResult(exit_code=exit_code, output=text, timed_out=timed_out)


def _read_until_eof(fd: int, pid: int, timeout: float | None) -> tuple[bytes, bool]:
    deadline = None if timeout is None else time.monotonic() + timeout
    kept = b""
    timed_out = False
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            timed_out = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = None  # now read what is left until the pipe closes
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return kept, timed_out
        kept = (kept + chunk)[-MAX_OUTPUT:]
