"""Fixtures shared by every test area. Areas keep their own fixtures in tests/<area>/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from busybox_rootfs import make_rootfs, make_rootfs_tar


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention busybox rootfs directory; copy it before changing it."""
    return make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs as a plain tar archive, like `docker export` writes."""
    work = tmp_path_factory.mktemp("busybox-tar")
    return make_rootfs_tar(work / "busybox.tar", work)
