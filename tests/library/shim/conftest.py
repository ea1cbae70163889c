"""Fixtures for shim tests; the lab itself is in shim_lab.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from shim_lab import ShimLab


@pytest.fixture(scope="session")
def shim_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the busybox rootfs for the shim tests; their containers do not write to it."""
    rootfs = tmp_path_factory.mktemp("shim") / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    return rootfs


@pytest.fixture
def shim_lab(tmp_path: Path, shim_rootfs: Path) -> Iterator[ShimLab]:
    lab = ShimLab(tmp_path, shim_rootfs)
    try:
        yield lab
    finally:
        lab.cleanup()
