"""Fixtures for the runtime tests (helpers live in runtime_harness.py)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runtime_harness import Bundle, Runtime, host_cgroup_dirs, host_mounts_mentioning

from carte.runtime.spec import default_spec, encode_spec


@pytest.fixture
def unique() -> str:
    """A short id unique to this test, for every host resource it names."""
    return f"h3{uuid.uuid4().hex[:8]}"


@pytest.fixture
def runtime(tmp_path: Path, unique: str) -> Iterator[Runtime]:
    """A runtime with its own state root; afterwards every container it made is force-deleted
    and the test fails if a cgroup, a state directory or a mount of this test is left."""
    runner = Runtime(state=tmp_path / "state", prefix=unique)
    yield runner
    for container_id in runner.ids:
        runner("delete", "--force", container_id)
    leftovers = [d for d in (runner.state.iterdir() if runner.state.exists() else [])]
    assert leftovers == [], f"state directories left: {leftovers}"
    for container_id in runner.ids:
        assert host_cgroup_dirs(container_id) == []
    assert host_mounts_mentioning(str(tmp_path)) == []


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path) -> Callable[..., Bundle]:
    """Make a bundle from the default spec running `args` in a copy of the busybox rootfs."""
    counter = iter(range(1000))

    def make(*args: str, shell: str | None = None) -> Bundle:
        path = tmp_path / f"bundle{next(counter)}"
        path.mkdir()
        shutil.copytree(busybox_rootfs, path / "rootfs", symlinks=True)
        command = ["sh", "-c", shell] if shell is not None else list(args) or ["true"]
        config = json.loads(encode_spec(default_spec(args=command)))
        return Bundle(path=path, config=config)

    return make
