"""Ending a peer process a test started (a daemon, etcd): politely first."""

from __future__ import annotations

import subprocess

__all__ = ["terminate"]


def terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str], seconds: float) -> None:
    """SIGTERM, then SIGKILL if `process` has not ended within `seconds`; reaped either way."""
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
