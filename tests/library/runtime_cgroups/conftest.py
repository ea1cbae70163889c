"""Fixtures for the cgroup driver tests: uniquely named real cgroups and paused child processes.

Every cgroup is created under a name unique to the test and destroyed afterwards; the fixture
asserts that nothing of it is left in any hierarchy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cgroup_children import PausedChild

from carte.runtime.cgroups import Cgroup, CgroupLayout, LayoutKind, detect_layout, open_cgroup


@pytest.fixture
def spawn() -> Iterator[Callable[[str], PausedChild]]:
    """A factory of `PausedChild`; every child is killed and reaped after the test."""
    children: list[PausedChild] = []

    def start(code: str) -> PausedChild:
        child = PausedChild(code)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


@pytest.fixture(scope="session")
def host_layout() -> CgroupLayout:
    return detect_layout()


def _unique_path() -> str:
    # Top level, not under /carte: a weight given to the test's cgroup then competes with the
    # rest of the machine directly, which keeps CPU measurements meaningful on a busy host.
    return f"/carte-h4test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def v1_cgroup(host_layout: CgroupLayout) -> Iterator[Cgroup]:
    """A created v1 cgroup (this host keeps its controllers on v1), destroyed afterwards."""
    if host_layout.kind is LayoutKind.V2:
        pytest.skip("this host has no cgroup v1 controllers")
    cgroup = open_cgroup(_unique_path(), layout=host_layout)
    cgroup.create()
    yield cgroup
    cgroup.destroy()
    assert not cgroup.exists(), f"cgroup {cgroup.path} was left behind"


@pytest.fixture
def unified_layout(host_layout: CgroupLayout) -> Iterator[CgroupLayout]:
    """This host's cgroup2 hierarchy as a v2-only layout, under a parent of this test's own.

    Creating a v2 cgroup enables offered controllers in the root's subtree_control; whatever
    the test enabled there is disabled again afterwards.
    """
    if host_layout.unified_mount is None:
        pytest.skip("this host has no cgroup2 hierarchy")
    root = host_layout.unified_mount
    enabled_before = set((root / "cgroup.subtree_control").read_text().split())
    yield host_layout.unified_only()
    for controller in set((root / "cgroup.subtree_control").read_text().split()) - enabled_before:
        (root / "cgroup.subtree_control").write_text(f"-{controller}")


@pytest.fixture
def v2_cgroup(unified_layout: CgroupLayout) -> Iterator[Cgroup]:
    """A created cgroup in the unified hierarchy, driven by the v2 driver, removed afterwards."""
    parent = f"/carte-h4test-{uuid.uuid4().hex[:12]}"
    cgroup = open_cgroup(f"{parent}/c", layout=unified_layout)
    cgroup.create()
    yield cgroup
    cgroup.destroy()
    assert not cgroup.exists(), f"cgroup {cgroup.path} was left behind"
    assert unified_layout.unified_mount is not None
    (unified_layout.unified_mount / parent.lstrip("/")).rmdir()


@pytest.fixture(scope="session")
def host_block_device() -> tuple[int, int]:
    """(major, minor) of a block device this test process itself may open.

    A denial inside a cgroup then proves the cgroup's device rules, not the host's own
    restrictions (this machine refuses even root a read of its root disk).
    """
    for device in sorted(Path("/sys/block").iterdir()):
        major, minor = (int(part) for part in (device / "dev").read_text().split(":"))
        node = Path("/dev") / device.name
        try:
            os.close(os.open(node, os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            continue
        return major, minor
    pytest.skip("this host lets no process open any block device")
