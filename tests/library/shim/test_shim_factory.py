"""Shims forked by a warm factory behave like launched ones, and the factory goes with its stdin."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from shim_lab import ShimLab, process_alive, wait_for

from carte.api.errors import InvalidArgument
from carte.runtime.logs import read_logs
from carte.runtime.shim.client import (
    create_with_factory,
    factory_command,
    shim_arguments,
)


def test_factory_creates_working_shims_and_exits_with_its_stdin(shim_lab: ShimLab) -> None:
    socket_path = shim_lab.tmp_path / "factory.sock"
    factory = subprocess.Popen(
        factory_command(socket_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert factory.stdin is not None and factory.stdout is not None
    try:
        assert factory.stdout.readline() == b"ready\n"
        bundle = shim_lab.bundle(["sh", "-c", "echo made by the factory; exit 3"])
        durations = []
        for _ in range(3):
            container_id = shim_lab.new_id()
            arguments = shim_arguments(
                container_id=container_id,
                bundle=bundle,
                state_dir=shim_lab.state_dir,
                log_path=shim_lab.log_path(container_id),
            )
            began = time.monotonic()
            report = create_with_factory(socket_path, arguments)
            durations.append(time.monotonic() - began)
            shim_lab.shim_pids.append(report["shim_pid"])
            assert Path(f"/proc/{report['shim_pid']}/stat").read_text().split()[3] != str(
                factory.pid
            ), "the shim is not the factory's child"
            client = shim_lab.client(container_id)
            client.start()
            assert client.wait()["exit_code"] == 3
            texts = [e.text for e in read_logs(str(shim_lab.log_path(container_id)))]
            assert texts == ["made by the factory\n"]
        print(f"factory create: {[round(d, 3) for d in durations]} s")
        with pytest.raises(InvalidArgument, match="--bundle is required"):
            create_with_factory(socket_path, ["--id", "x"])
    finally:
        factory.stdin.close()
        assert factory.wait(10) == 0
        factory.stdout.close()
    wait_for(lambda: not socket_path.exists(), "the factory to remove its socket")
    assert not process_alive(factory.pid)
