"""Limits that bite on whole containers run through `carte runtime` (create, start, delete).

Each container gets its own cgroupsPath, so the test reads the kernel's own counters for it
through the cgroup driver while the container runs and after it has exited.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from cgroup_children import assert_the_host_answers, fork_bomb_peak
from support import REPO

from carte.runtime.cgroups import (
    Cgroup,
    LinuxCPU,
    LinuxMemory,
    LinuxPids,
    LinuxResources,
    default_devices,
    open_cgroup,
)
from carte.runtime.spec import default_spec, encode_spec

MB = 1 << 20


class Container:
    """One container made with `carte runtime create` from a busybox bundle."""

    def __init__(self, root: Path, bundle: Path, container_id: str, cgroups_path: str) -> None:
        self.root, self.bundle, self.id = root, bundle, container_id
        self.cgroup: Cgroup = open_cgroup(cgroups_path)
        self.output = bundle / "output"

    def runtime(self, *args: str) -> tuple[int, str]:
        """Run a runtime command; its exit status and the error text it wrote.

        The container inherits the stdio of `create`, so both go to files, never to pipes that
        would stay open for as long as the container runs.
        """
        errors = self.bundle / "errors"
        with self.output.open("a") as output, errors.open("w") as error_output:
            result = subprocess.run(
                [sys.executable, "-m", "carte", "runtime", "--root", str(self.root), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=error_output,
                timeout=60,
                cwd=REPO,
                check=False,
            )
        return result.returncode, errors.read_text()

    def status(self) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "carte", "runtime", "--root", str(self.root), "state", self.id],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
            check=True,
        )
        status: str = json.loads(result.stdout)["status"]
        return status

    def wait_stopped(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while self.status() != "stopped":
            assert time.monotonic() < deadline, f"container {self.id} still running"
            time.sleep(0.05)


@pytest.fixture
def container(tmp_path: Path, busybox_rootfs: Path) -> Iterator[Callable[..., Container]]:
    """Create (not start) a container running ``shell`` under ``resources``; force-deleted and
    checked for leftover cgroups afterwards."""
    made: list[Container] = []

    def create(shell: str, resources: LinuxResources) -> Container:
        unique = f"h4c{uuid.uuid4().hex[:8]}"
        bundle = tmp_path / unique
        bundle.mkdir()
        shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True)
        spec = default_spec(args=["sh", "-c", shell])
        # Top level, so that the CPU test's weight competes with the rest of the machine.
        spec.linux.cgroups_path = f"/carte-{unique}"
        resources.devices = default_devices()
        spec.linux.resources = resources
        (bundle / "config.json").write_bytes(encode_spec(spec))
        made_container = Container(tmp_path / "state", bundle, unique, spec.linux.cgroups_path)
        made.append(made_container)
        status, errors = made_container.runtime("create", "--bundle", str(bundle), unique)
        assert status == 0, errors
        return made_container

    yield create
    for made_container in made:
        made_container.runtime("delete", "--force", made_container.id)
        assert not made_container.cgroup.exists(), f"{made_container.cgroup.path} left behind"


def test_a_container_allocating_64mb_under_32mb_is_oom_killed(
    container: Callable[..., Container],
) -> None:
    box = container(
        "dd if=/dev/zero of=/dev/null bs=64M count=1 && echo survived",
        LinuxResources(memory=LinuxMemory(limit=32 * MB, swap=32 * MB)),
    )
    before = box.cgroup.oom_kill_count()
    assert box.runtime("start", box.id)[0] == 0
    box.wait_stopped()
    assert box.cgroup.oom_killed_since(before)
    assert "survived" not in box.output.read_text()


def test_a_fork_bomb_in_a_container_never_exceeds_64_tasks(
    container: Callable[..., Container],
) -> None:
    # pid 1 only waits: were it a bomber, its first refused fork would end the container.
    bomb = "sleep 600 & bomb() { bomb & bomb; }; (bomb) & wait"
    box = container(bomb, LinuxResources(pids=LinuxPids(limit=64)))
    assert box.runtime("start", box.id)[0] == 0
    peak, _ = fork_bomb_peak(box.cgroup.stats)
    assert peak == 64, f"expected the bomb to press against exactly 64 tasks, saw {peak}"
    assert_the_host_answers()
    assert box.runtime("delete", "--force", box.id)[0] == 0
    assert not box.cgroup.exists()


def test_half_a_cpu_holds_a_busy_container_near_half(container: Callable[..., Container]) -> None:
    # The highest weight, so that other work on a busy test machine cannot be what holds the
    # loop back: only the quota (the engine's "cpus: 0.5") may.
    cpu = LinuxCPU(quota=50_000, period=100_000, shares=262_144)
    box = container("while :; do :; done", LinuxResources(cpu=cpu))
    assert box.runtime("start", box.id)[0] == 0
    time.sleep(0.3)
    shares = []
    for seconds in (1.0, 1.0, 2.0):
        start_usage, start = box.cgroup.stats().cpu_usage_ns, time.monotonic()
        time.sleep(seconds)
        used = box.cgroup.stats().cpu_usage_ns - start_usage
        shares.append(used / ((time.monotonic() - start) * 1e9))
        if shares[-1] > 0.35:
            break
    assert max(shares) < 0.65, f"busy container used {max(shares):.0%} of a CPU"
    if max(shares) <= 0.35 and box.cgroup.stats().cpu_throttled_periods == 0:
        pytest.skip(f"host too busy: the loop got {max(shares):.0%} without hitting its quota")
    assert max(shares) > 0.35, f"busy container used only {max(shares):.0%} of a CPU"
    assert box.cgroup.stats().cpu_throttled_periods > 0, "the quota never throttled the loop"


def test_resources_survive_the_spec_round_trip() -> None:
    """The runtime's spec model carries linux.resources through config.json unchanged."""
    spec = default_spec(args=["true"])
    spec.linux.resources = LinuxResources(pids=LinuxPids(limit=64))
    decoded = msgspec.json.decode(encode_spec(spec))
    assert decoded["linux"]["resources"]["pids"] == {"limit": 64}
