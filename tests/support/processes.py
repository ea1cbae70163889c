"""Ending a peer process a test started (a daemon, etcd): politely first."""

from __future__ import annotations

import os
import subprocess

__all__ = ["SLOWDOWN", "terminate"]

SLOWDOWN = float(os.environ.get("CARTE_TEST_SLOWDOWN", "1"))
"""How much slower than this machine the tests run: a guest kernel under emulation (the VM
tests) sets it, and the start and command timeouts of daemons, etcd and labs grow by it."""


def terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str], seconds: float) -> None:
    """SIGTERM, then SIGKILL if `process` has not ended within `seconds`; reaped either way."""
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
