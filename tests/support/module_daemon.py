"""The "daemon with busybox, emptied after each test" that the daemon test areas share.

An area's conftest makes one `ModuleDaemon` per test module (a module-scoped fixture around
``with ModuleDaemon(busybox_tar, config=...) as module``) and hands its daemon to each test
through ``with module.test() as daemon``. `daemon_fixtures` declares that pair of fixtures in
one line (tests/daemon/containers/conftest.py shows it).

After each test its stacks, containers (with their anonymous volumes) and, when asked for,
named volumes and user networks are removed through the client; a daemon a test killed is
started again for the next. After the module the daemon is emptied and stopped gracefully,
and nothing of it may be left on the host (support.leftovers.host_leftovers): the module's
last test fails at teardown naming what was left. Whatever happens, everything is removed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from support.daemon import Daemon, DaemonFactory, remove_host_network_state
from support.leftovers import host_leftovers, remove_leftovers

__all__ = ["ModuleDaemon", "alive", "daemon_fixtures", "empty", "module_fixture", "stop_and_clean"]


def alive(daemon: Daemon) -> bool:
    return daemon.process is not None and daemon.process.poll() is None


def empty(
    daemon: Daemon, *, stacks: bool = False, volumes: bool = False, networks: bool = False
) -> set[str]:
    """Remove what tests made on a live daemon; returns the bridges of its networks (for the
    leftover check). A removal that hangs is left to `remove_leftovers`."""
    bridges: set[str] = set()
    try:
        if networks:
            listed = daemon.client("--format", "json", "network", "ls")
            if listed.returncode == 0:
                bridges = {n["bridge"] for n in json.loads(listed.stdout) if n.get("bridge")}
        if stacks:
            listed = daemon.client("--format", "json", "stack", "ls")
            for stack in json.loads(listed.stdout) if listed.returncode == 0 else []:
                daemon.client("stack", "rm", stack["name"])
        for container_id in daemon.client("ps", "-aq", "--no-trunc").stdout.split():
            daemon.client("rm", "-f", "-v", container_id, timeout=15)
        if volumes:
            for name in daemon.client("volume", "ls", "-q").stdout.split():
                daemon.client("volume", "rm", "-f", name)
        if networks:
            # A stack's network stays busy until its last replica is gone; try for 15 s.
            deadline = time.monotonic() + 15
            while True:
                listed = daemon.client("network", "ls", "--format", "{{.Name}}").stdout.split()
                left = [name for name in listed if name != "bridge"]
                for name in left:
                    daemon.client("network", "rm", name)
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    except subprocess.TimeoutExpired:
        pass
    return bridges


def stop_and_clean(factory: DaemonFactory) -> None:
    """Stop every daemon of `factory` gracefully, remove what its containers left (processes,
    cgroups, state) and then the daemons' directories and host network state."""
    for daemon in factory.daemons:
        if alive(daemon):
            daemon.stop()
        remove_leftovers(daemon)
    factory.cleanup()


class ModuleDaemon:
    """One daemon for a test module with busybox imported as `tag` (see the module docstring).

    `stacks`, `volumes`, `networks`: also remove those after each test (containers always).
    """

    def __init__(
        self,
        busybox_tar: Path,
        *,
        config: str = "",
        tag: str = "busybox",
        stacks: bool = False,
        volumes: bool = False,
        networks: bool = False,
    ) -> None:
        self.busybox_tar = busybox_tar
        self.config = config
        self.tag = tag
        self.what = {"stacks": stacks, "volumes": volumes, "networks": networks}
        self.factory = DaemonFactory()
        self.bridges: set[str] = set()
        self._daemon: Daemon | None = None

    @property
    def daemon(self) -> Daemon:
        assert self._daemon is not None, "ModuleDaemon used outside its `with` block"
        return self._daemon

    def __enter__(self) -> ModuleDaemon:
        try:
            self._daemon = self.factory(config=self.config)
            imported = self._daemon.client("import", str(self.busybox_tar), self.tag)
            assert imported.returncode == 0, imported.stderr
        except BaseException:
            self._remove_all()
            raise
        return self

    @contextmanager
    def test(self) -> Iterator[Daemon]:
        """The daemon for one test (started again if a test killed it); emptied after it."""
        daemon = self.daemon
        if not alive(daemon):
            daemon.start()
        try:
            yield daemon
        finally:
            if alive(daemon):
                self.bridges |= empty(daemon, **self.what)
            remove_leftovers(daemon)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        left: list[str] = []
        try:
            if kind is None and alive(self.daemon):
                self.bridges |= empty(self.daemon, **self.what)
                self.daemon.stop()  # graceful: the network handler removes its bridge and table
                left = host_leftovers(self.daemon, self.bridges)
        finally:
            self._remove_all()
        assert not left, f"left on the host after the daemon stopped: {left}"

    def _remove_all(self) -> None:
        for daemon in self.factory.daemons:
            if alive(daemon):
                empty(daemon, **self.what)
        for daemon in self.factory.daemons:
            remove_leftovers(daemon)
        self.factory.cleanup()
        for daemon in self.factory.daemons:
            remove_host_network_state(daemon.root, sorted(self.bridges))


def module_fixture(name: str, *, config: str = "", **options: Any) -> Callable[..., Any]:
    """A module-scoped fixture `name`: one `ModuleDaemon` (`config`, `options` as it takes them)
    for a test module."""

    @pytest.fixture(scope="module", name=name)
    def fixture(busybox_tar: Path) -> Iterator[ModuleDaemon]:
        with ModuleDaemon(busybox_tar, config=config, **options) as made:
            yield made

    return fixture


def daemon_fixtures(
    module: str, test: str = "carte", *, config: str = "", **options: Any
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The two fixtures of an area: `module` (see `module_fixture`) and `test`, its daemon for
    one test, emptied after it. Bind both in the conftest:
    ``module_daemon, carte = daemon_fixtures("module_daemon")``."""

    @pytest.fixture(name=test)
    def test_fixture(request: pytest.FixtureRequest) -> Iterator[Daemon]:
        with request.getfixturevalue(module).test() as daemon:
            yield daemon

    return module_fixture(module, config=config, **options), test_fixture
