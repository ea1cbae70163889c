"""Podman as a peer: its own storage (vfs), run root and containers.conf with runc, so it
never touches the host's podman state (see /work/shared/PEERS.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PODMAN_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


class Podman:
    """`podman(*args)` runs podman on this private storage and returns its stdout."""

    def __init__(self, base: Path, run_root: Path) -> None:
        base.mkdir(parents=True)
        conf = base / "containers.conf"
        conf.write_text(PODMAN_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.prefix = ["podman", "--root", str(base / "root"), "--runroot", str(run_root)]
        self.prefix += ["--storage-driver", "vfs"]

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [*self.prefix, *args], env=self.env, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


@contextmanager
def podman_in(base: Path) -> Iterator[Podman]:
    """A private podman whose storage is under `base`; its helpers gone when this ends."""
    # podman refuses a run root longer than 50 characters: it lives directly under /tmp.
    run_root = Path(tempfile.mkdtemp(prefix="carte-podman-", dir="/tmp"))
    try:
        yield Podman(base, run_root)
    finally:
        _wait_for_podman_cleanup(run_root)
        shutil.rmtree(run_root, ignore_errors=True)


def _wait_for_podman_cleanup(run_root: Path) -> None:
    """conmon starts `podman container cleanup`, which outlives `podman run --rm`: wait for
    every process naming our run root to be gone."""
    marker = str(run_root).encode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        busy = False
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                busy = busy or marker in cmdline.read_bytes()
            except OSError:
                continue
        if not busy:
            return
        time.sleep(0.05)
