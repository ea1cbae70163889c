"""The v2 driver on this host's real, controller-less cgroup2 hierarchy.

Here the unified hierarchy offers no limit controllers (they live on v1), so this covers what
works without them: groups, moving processes, cgroup.freeze, cgroup.kill and cgroup.events.
The limit files are exercised in a real cgroup-v2 kernel by test_cgroups_v2_kernel.py.
"""

from __future__ import annotations

import errno
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cgroup_children import PausedChild, probe_disk

from carte.api.errors import Unavailable
from carte.runtime.cgroups import (
    Cgroup,
    LinuxDeviceCgroup,
    LinuxMemory,
    LinuxResources,
    V2Cgroup,
)

Spawn = Callable[[str], PausedChild]


def test_a_process_moves_in_and_populates_the_group(v2_cgroup: Cgroup, spawn: Spawn) -> None:
    assert isinstance(v2_cgroup, V2Cgroup)
    assert v2_cgroup.events()["populated"] == 0
    child = spawn("")
    v2_cgroup.add_process(child.pid)
    assert v2_cgroup.pids() == [child.pid]
    assert v2_cgroup.events()["populated"] == 1
    membership = Path(f"/proc/{child.pid}/cgroup").read_text().splitlines()
    assert f"0::{v2_cgroup.path}" in membership


def test_freeze_reports_frozen_and_stops_a_busy_loop(v2_cgroup: Cgroup, spawn: Spawn) -> None:
    assert isinstance(v2_cgroup, V2Cgroup)
    child = spawn("print('spinning', flush=True)\nwhile True: pass")
    v2_cgroup.add_process(child.pid)
    child.release()
    assert child.read_line() == "spinning"
    v2_cgroup.freeze()
    assert v2_cgroup.events()["frozen"] == 1
    frozen_usage = v2_cgroup.stats().cpu_usage_ns
    time.sleep(0.3)
    assert v2_cgroup.stats().cpu_usage_ns == frozen_usage
    v2_cgroup.thaw()
    assert v2_cgroup.events()["frozen"] == 0
    time.sleep(0.3)
    assert v2_cgroup.stats().cpu_usage_ns > frozen_usage


def test_cgroup_kill_ends_every_process(v2_cgroup: Cgroup, spawn: Spawn) -> None:
    assert isinstance(v2_cgroup, V2Cgroup)
    child = spawn(
        "import subprocess\n"
        "grandchild = subprocess.Popen(['sleep', '60'])\n"
        "print(grandchild.pid, flush=True)\n"
        "grandchild.wait()"
    )
    v2_cgroup.add_process(child.pid)
    child.release()
    child.read_line()
    assert len(v2_cgroup.pids()) == 2
    v2_cgroup.kill(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 5.0
    while v2_cgroup.events()["populated"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert v2_cgroup.events()["populated"] == 0


def test_destroy_removes_the_group_with_a_process_still_in_it(
    v2_cgroup: Cgroup, spawn: Spawn
) -> None:
    child = spawn("")
    v2_cgroup.add_process(child.pid)
    v2_cgroup.destroy()
    assert child.wait() == -signal.SIGKILL
    assert not v2_cgroup.exists()
    v2_cgroup.destroy()


def test_a_limit_without_its_controller_says_so(v2_cgroup: Cgroup) -> None:
    with pytest.raises(Unavailable, match=r"memory\.max does not exist"):
        v2_cgroup.apply(LinuxResources(memory=LinuxMemory(limit=1 << 25)))


def test_the_ebpf_device_filter_denies_a_raw_disk_and_allows_null(
    v2_cgroup: Cgroup, spawn: Spawn, tmp_path: Path, host_block_device: tuple[int, int]
) -> None:
    """The filter needs no controller, so it is enforced on this controller-less hierarchy."""
    v2_cgroup.apply(None)
    assert probe_disk(v2_cgroup, spawn, tmp_path / "disk", host_block_device) == (
        str(errno.EPERM),
        "null ok",
    )


def test_updating_device_rules_replaces_the_filter(
    v2_cgroup: Cgroup, spawn: Spawn, tmp_path: Path, host_block_device: tuple[int, int]
) -> None:
    v2_cgroup.apply(LinuxResources())
    v2_cgroup.update(LinuxResources(devices=[LinuxDeviceCgroup(allow=True, access="rwm")]))
    assert probe_disk(v2_cgroup, spawn, tmp_path / "disk", host_block_device) == (
        "opened",
        "null ok",
    )
    v2_cgroup.update(
        LinuxResources(
            devices=[
                LinuxDeviceCgroup(allow=True, access="rwm"),
                LinuxDeviceCgroup(allow=False, type="b", access="r"),
            ]
        )
    )
    assert probe_disk(v2_cgroup, spawn, tmp_path / "disk", host_block_device) == (
        str(errno.EPERM),
        "null ok",
    )
