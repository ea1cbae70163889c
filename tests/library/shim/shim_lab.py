"""The shim test lab: busybox bundles, real shims, and a check that nothing is left behind.

A module of its own (not conftest) so tests import it by a name unique across tests/."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from carte.runtime.cgroups import LinuxMemory, LinuxResources
from carte.runtime.shim.client import (
    ShimClient,
    create_with_factory,
    factory_command,
    parse_report,
    shim_arguments,
    shim_command,
    socket_path,
)
from carte.runtime.spec import INIT_ANNOTATION, default_spec, encode_spec

CGROUP_ROOT = Path("/sys/fs/cgroup")


def wait_for(condition: Callable[[], object], what: str, limit: float = 10.0) -> None:
    """Poll `condition` until it is true; fail naming `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _gone(pid: int) -> Callable[[], bool]:
    return lambda: not process_alive(pid)


class ShimLab:
    """Makes bundles and shims with unique ids under `tmp_path`; `cleanup` removes them."""

    def __init__(self, tmp_path: Path, rootfs: Path) -> None:
        self.tmp_path = tmp_path
        self.rootfs = rootfs
        self.state_dir = tmp_path / "state"
        self.ids: list[str] = []
        self.shim_pids: list[int] = []
        self.clients: list[ShimClient] = []

    def new_id(self) -> str:
        container_id = f"h7-{uuid.uuid4().hex[:10]}"
        self.ids.append(container_id)
        return container_id

    def bundle(
        self,
        args: list[str],
        *,
        terminal: bool = False,
        init: bool = False,
        memory_limit: int | None = None,
    ) -> Path:
        bundle = self.tmp_path / f"bundle-{uuid.uuid4().hex[:6]}"
        bundle.mkdir()
        spec = default_spec(args=args, rootfs=str(self.rootfs), terminal=terminal)
        if init:
            spec.annotations[INIT_ANNOTATION] = "true"
        if memory_limit is not None:
            resources = spec.linux.resources or LinuxResources()
            resources.memory = LinuxMemory(limit=memory_limit, swap=memory_limit)
            spec.linux.resources = resources
        (bundle / "config.json").write_bytes(encode_spec(spec))
        return bundle

    def log_path(self, container_id: str) -> Path:
        return self.tmp_path / f"{container_id}.log"

    def command(self, container_id: str, bundle: Path, **options: Any) -> list[str]:
        options.setdefault("linger", 30.0)
        arguments = shim_arguments(
            container_id=container_id,
            bundle=bundle,
            state_dir=self.state_dir,
            log_path=self.log_path(container_id),
            **options,
        )
        return shim_command(arguments)

    def create(self, bundle: Path, **options: Any) -> tuple[str, dict[str, Any]]:
        """A new container under a new shim; its id and the shim's report."""
        container_id = self.new_id()
        result = subprocess.run(
            self.command(container_id, bundle, **options), capture_output=True, timeout=30
        )
        report = parse_report(result.stdout)
        self.shim_pids.append(int(report["shim_pid"]))
        return container_id, report

    @contextmanager
    def factory(self) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
        """A warm shim factory, ready on ``factory.sock``, and that socket's path; after the
        block its stdin is closed (which ends it) and it is reaped (see ``returncode``)."""
        socket = self.tmp_path / "factory.sock"
        process = subprocess.Popen(
            factory_command(socket), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            assert process.stdout.readline() == b"ready\n"
            yield process, socket
        finally:
            process.stdin.close()
            process.wait(10)
            process.stdout.close()

    def create_with_factory(self, socket: Path, bundle: Path) -> tuple[str, dict[str, Any]]:
        """A new container under a shim forked by the factory on `socket`; its id and the
        shim's report."""
        container_id = self.new_id()
        arguments = shim_arguments(
            container_id=container_id,
            bundle=bundle,
            state_dir=self.state_dir,
            log_path=self.log_path(container_id),
        )
        report = create_with_factory(socket, arguments)
        self.shim_pids.append(int(report["shim_pid"]))
        return container_id, report

    def client(self, container_id: str) -> ShimClient:
        client = ShimClient(socket_path(self.state_dir, container_id))
        client.sock.settimeout(20)
        self.clients.append(client)
        return client

    def cleanup(self) -> None:
        """Delete every container, then check that none of ours is left anywhere."""
        from carte.runtime.container import delete

        for client in self.clients:
            client.close()
        for container_id in self.ids:
            try:
                with ShimClient(socket_path(self.state_dir, container_id)) as client:
                    client.sock.settimeout(20)
                    client.delete(force=True)
            except Exception:
                pass
        for pid in self.shim_pids:
            wait_for(_gone(pid), f"shim {pid} to exit")
        for container_id in self.ids:
            if (self.state_dir / container_id).exists():
                delete(self.state_dir, container_id, force=True)
        self.check_clean()

    def check_clean(self) -> None:
        for container_id in self.ids:
            assert not (self.state_dir / container_id).exists(), f"state of {container_id} left"
            leftovers = [
                path for path in CGROUP_ROOT.glob(f"*/carte/{container_id}") if path.exists()
            ]
            assert leftovers == [], f"cgroups left: {leftovers}"
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if container_id.encode() in cmdline and process_alive(int(proc.name)):
                    os.kill(int(proc.name), signal.SIGKILL)
                    pytest.fail(f"process {proc.name} of {container_id} left running")
