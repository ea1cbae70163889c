"""Fixtures every test area can use (loaded by tests/conftest.py through `pytest_plugins`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.busybox import make_rootfs, make_rootfs_tar
from support.daemon import DaemonFactory, install_sample_plugin
from support.leftovers import cgroup_parents, remove_cgroup_parents


@pytest.fixture(scope="session", autouse=True)
def no_cgroup_parents_left() -> Iterator[None]:
    """The suite leaves no `carte` cgroup on the host that was not there before it ran."""
    before = cgroup_parents()
    yield
    remove_cgroup_parents(before)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention busybox rootfs directory; copy it before changing it."""
    return make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs as a plain tar archive, like `docker export` writes."""
    work = tmp_path_factory.mktemp("busybox-tar")
    return make_rootfs_tar(work / "busybox.tar", work)


@pytest.fixture
def daemons() -> Iterator[DaemonFactory]:
    """A factory of daemons (Carte from this checkout, no plugins beyond the installed ones)."""
    factory = DaemonFactory()
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def sample_plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the pip-installed sample plugin (once per session)."""
    target = tmp_path_factory.getbasetemp() / "sample-plugin-site"
    if not (target / "carte_sample_plugin.py").exists():
        install_sample_plugin(target)
    return target


@pytest.fixture
def plugin_daemons(sample_plugin_dir: Path) -> Iterator[DaemonFactory]:
    """A factory of daemons that also see the sample plugin through its entry point."""
    factory = DaemonFactory(extra_path=[sample_plugin_dir])
    yield factory
    factory.cleanup()
