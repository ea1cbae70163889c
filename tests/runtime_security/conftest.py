"""Fixtures for the seccomp and capability tests: run security_probe.py in a fresh interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_PROBE = Path(__file__).with_name("security_probe.py")
_REPOSITORY = Path(__file__).resolve().parents[2]

RunProbe = Callable[..., dict[str, Any]]


@pytest.fixture
def probe_scratch() -> Iterator[Path]:
    """A directory every uid can write in (pytest's tmp_path is reachable by root only)."""
    scratch = Path(tempfile.mkdtemp(prefix="carte-security-probe-"))
    scratch.chmod(0o777)
    yield scratch
    shutil.rmtree(scratch)


@pytest.fixture
def run_probe(probe_scratch: Path) -> RunProbe:
    """Call with the request keys of security_probe.py; returns its results, fails on a crash."""

    def run(**request: Any) -> dict[str, Any]:
        request.setdefault("scratch", str(probe_scratch))
        env = {**os.environ, "PYTHONPATH": str(_REPOSITORY)}
        done = subprocess.run(
            [sys.executable, str(_PROBE), json.dumps(request)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        results: dict[str, Any] = json.loads(done.stdout)
        return results

    return run
