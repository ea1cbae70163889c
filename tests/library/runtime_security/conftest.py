"""Fixtures for the seccomp and capability tests: run security_probe.py in a fresh interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO

_PROBE = Path(__file__).with_name("security_probe.py")
_REPOSITORY = REPO

RunProbe = Callable[..., dict[str, Any]]
ProbeProcess = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def probe_scratch() -> Iterator[Path]:
    """A directory every uid can write in (pytest's tmp_path is reachable by root only)."""
    scratch = Path(tempfile.mkdtemp(prefix="carte-security-probe-"))
    scratch.chmod(0o777)
    yield scratch
    shutil.rmtree(scratch)


@pytest.fixture
def probe_process(probe_scratch: Path) -> ProbeProcess:
    """Call with the request keys of security_probe.py; returns the finished process as is."""

    def run(**request: Any) -> subprocess.CompletedProcess[str]:
        request.setdefault("scratch", str(probe_scratch))
        env = {**os.environ, "PYTHONPATH": str(_REPOSITORY)}
        return subprocess.run(
            [sys.executable, str(_PROBE), json.dumps(request)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture
def run_probe(probe_process: ProbeProcess) -> RunProbe:
    """Call with the request keys of security_probe.py; returns its results, fails on a crash."""

    def run(**request: Any) -> dict[str, Any]:
        done = probe_process(**request)
        assert done.returncode == 0, done.stderr
        results: dict[str, Any] = json.loads(done.stdout)
        return results

    return run


@pytest.fixture
def run_container(tmp_path: Path, busybox_rootfs: Path) -> Iterator[RunContainer]:
    """`carte runtime run` of a busybox container from the default spec; call with the shell
    script to run and optionally `edit(config)` to change config.json first. Afterwards every
    container is force-deleted and the test fails if its state or a cgroup named after it stays."""
    from carte.runtime.spec import default_spec, encode_spec

    state = tmp_path / "state"
    ids: list[str] = []
    prefix = f"h5{uuid.uuid4().hex[:8]}"

    def runtime(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "carte", "runtime", "--root", str(state), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=_REPOSITORY,
            check=False,
        )

    def run(
        script: str, edit: Callable[[dict[str, Any]], None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        bundle = tmp_path / f"bundle{len(ids)}"
        shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True)
        config: dict[str, Any] = json.loads(encode_spec(default_spec(args=["sh", "-c", script])))
        if edit is not None:
            edit(config)
        (bundle / "config.json").write_text(json.dumps(config))
        container_id = f"{prefix}-{len(ids)}"
        ids.append(container_id)
        return runtime("run", "--bundle", str(bundle), container_id)

    yield run
    for container_id in ids:
        runtime("delete", "--force", container_id)
    assert not state.exists() or list(state.iterdir()) == []
    for container_id in ids:
        assert list(Path("/sys/fs/cgroup").glob(f"*/carte/{container_id}")) == []


RunContainer = Callable[..., subprocess.CompletedProcess[str]]
