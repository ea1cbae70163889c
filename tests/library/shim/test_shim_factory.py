"""Shims forked by a warm factory behave like launched ones, and the factory goes with its stdin."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from shim_lab import ShimLab, process_alive, wait_for

from carte.api.errors import InvalidArgument
from carte.runtime.logs import read_logs
from carte.runtime.shim.client import create_with_factory


def test_factory_creates_working_shims_and_exits_with_its_stdin(shim_lab: ShimLab) -> None:
    with shim_lab.factory() as (factory, socket_path):
        bundle = shim_lab.bundle(["sh", "-c", "echo made by the factory; exit 3"])
        durations = []
        for _ in range(3):
            began = time.monotonic()
            container_id, report = shim_lab.create_with_factory(socket_path, bundle)
            durations.append(time.monotonic() - began)
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
    assert factory.returncode == 0
    wait_for(lambda: not socket_path.exists(), "the factory to remove its socket")
    assert not process_alive(factory.pid)
