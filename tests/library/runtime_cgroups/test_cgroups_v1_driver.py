"""The v1 driver on this host's real v1 hierarchies: limits land in the files and they bite."""

from __future__ import annotations

import errno
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cgroup_children import (
    PausedChild,
    assert_the_host_answers,
    fork_bomb,
    fork_bomb_peak,
    probe_disk,
)

from carte.api.errors import InvalidArgument
from carte.runtime.cgroups import (
    Cgroup,
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxMemory,
    LinuxPids,
    LinuxResources,
    LinuxThrottleDevice,
)

Spawn = Callable[[str], PausedChild]
MB = 1 << 20


def read(cgroup: Cgroup, controller: str, name: str) -> str:
    return (cgroup.paths()[controller] / name).read_text().strip()


def test_apply_writes_every_limit_to_its_file(v1_cgroup: Cgroup) -> None:
    v1_cgroup.apply(
        LinuxResources(
            memory=LinuxMemory(limit=64 * MB, reservation=32 * MB, swappiness=10),
            cpu=LinuxCPU(shares=512, quota=50_000, period=100_000, cpus="0", mems="0"),
            pids=LinuxPids(limit=100),
        )
    )
    assert read(v1_cgroup, "memory", "memory.limit_in_bytes") == str(64 * MB)
    assert read(v1_cgroup, "memory", "memory.soft_limit_in_bytes") == str(32 * MB)
    assert read(v1_cgroup, "memory", "memory.swappiness") == "10"
    assert read(v1_cgroup, "cpu", "cpu.shares") == "512"
    assert read(v1_cgroup, "cpu", "cpu.cfs_quota_us") == "50000"
    assert read(v1_cgroup, "cpu", "cpu.cfs_period_us") == "100000"
    assert read(v1_cgroup, "cpuset", "cpuset.cpus") == "0"
    assert read(v1_cgroup, "pids", "pids.max") == "100"


def test_block_io_throttles_land_per_device(
    v1_cgroup: Cgroup, host_block_device: tuple[int, int]
) -> None:
    major, minor = host_block_device
    rule = LinuxThrottleDevice(major=major, minor=minor, rate=MB)
    v1_cgroup.apply(
        LinuxResources(
            block_io=LinuxBlockIO(
                throttle_read_bps_device=[rule], throttle_write_iops_device=[rule]
            )
        )
    )
    assert read(v1_cgroup, "blkio", "blkio.throttle.read_bps_device") == f"{major}:{minor} {MB}"
    assert read(v1_cgroup, "blkio", "blkio.throttle.write_iops_device") == f"{major}:{minor} {MB}"


def test_memory_plus_swap_limits_grow_and_shrink_in_a_valid_order(v1_cgroup: Cgroup) -> None:
    if not (v1_cgroup.paths()["memory"] / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("this kernel has no swap accounting (memory.memsw.*)")
    v1_cgroup.apply(LinuxResources(memory=LinuxMemory(limit=32 * MB, swap=64 * MB)))
    assert read(v1_cgroup, "memory", "memory.memsw.limit_in_bytes") == str(64 * MB)
    # Growing past the current memory+swap limit needs memsw written first; shrinking, last.
    v1_cgroup.update(LinuxResources(memory=LinuxMemory(limit=128 * MB, swap=256 * MB)))
    assert read(v1_cgroup, "memory", "memory.limit_in_bytes") == str(128 * MB)
    assert read(v1_cgroup, "memory", "memory.memsw.limit_in_bytes") == str(256 * MB)
    v1_cgroup.update(LinuxResources(memory=LinuxMemory(limit=16 * MB, swap=16 * MB)))
    assert read(v1_cgroup, "memory", "memory.limit_in_bytes") == str(16 * MB)
    assert read(v1_cgroup, "memory", "memory.memsw.limit_in_bytes") == str(16 * MB)


def test_live_update_changes_limits_of_a_running_process(v1_cgroup: Cgroup, spawn: Spawn) -> None:
    v1_cgroup.apply(LinuxResources(memory=LinuxMemory(limit=64 * MB), pids=LinuxPids(limit=10)))
    child = spawn("")
    v1_cgroup.add_process(child.pid)
    v1_cgroup.update(
        LinuxResources(
            memory=LinuxMemory(limit=128 * MB), pids=LinuxPids(limit=20), cpu=LinuxCPU(quota=25_000)
        )
    )
    assert read(v1_cgroup, "memory", "memory.limit_in_bytes") == str(128 * MB)
    assert read(v1_cgroup, "pids", "pids.max") == "20"
    assert read(v1_cgroup, "cpu", "cpu.cfs_quota_us") == "25000"
    assert v1_cgroup.pids() == [child.pid]


def test_new_cgroup_starts_with_the_default_device_rules(v1_cgroup: Cgroup) -> None:
    v1_cgroup.apply(None)
    rules = read(v1_cgroup, "devices", "devices.list").splitlines()
    assert "a *:* rwm" not in rules
    assert {"c 1:3 rwm", "c 1:9 rwm", "c 5:2 rwm", "c 136:* rwm", "b *:* m"} <= set(rules)
    assert not [rule for rule in rules if rule.startswith("b ") and rule != "b *:* m"]


def test_a_raw_disk_node_made_inside_the_group_cannot_be_opened(
    v1_cgroup: Cgroup, spawn: Spawn, tmp_path: Path, host_block_device: tuple[int, int]
) -> None:
    v1_cgroup.apply(LinuxResources())
    assert probe_disk(v1_cgroup, spawn, tmp_path / "disk", host_block_device) == (
        str(errno.EPERM),
        "null ok",
    )


def test_stats_reflect_a_process_allocating_memory(v1_cgroup: Cgroup, spawn: Spawn) -> None:
    v1_cgroup.apply(LinuxResources(memory=LinuxMemory(limit=256 * MB), pids=LinuxPids(limit=50)))
    child = spawn("data = b'x' * (48 << 20)\nprint('ready', flush=True)\nsys.stdin.read()")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.read_line() == "ready"
    stats = v1_cgroup.stats()
    assert stats.memory_usage >= 48 * MB
    assert stats.memory_max_usage >= stats.memory_usage
    assert stats.memory_limit == 256 * MB
    assert stats.pids_current == 1
    assert stats.pids_limit == 50
    assert stats.cpu_usage_ns > 0
    assert stats.cpu_user_ns + stats.cpu_system_ns > 0
    assert stats.oom_kills == 0


def test_memory_limit_oom_kills_a_process_allocating_twice_as_much(
    v1_cgroup: Cgroup, spawn: Spawn
) -> None:
    v1_cgroup.apply(LinuxResources(memory=LinuxMemory(limit=32 * MB, swap=32 * MB)))
    before = v1_cgroup.oom_kill_count()
    child = spawn("data = b'x' * (64 << 20)\nprint('survived', flush=True)")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.wait() == -signal.SIGKILL
    assert v1_cgroup.oom_killed_since(before)
    assert v1_cgroup.oom_kill_count() == before + 1
    assert v1_cgroup.stats().oom_kills == before + 1


def test_pids_limit_bounds_a_fork_bomb_and_the_host_keeps_answering(v1_cgroup: Cgroup) -> None:
    v1_cgroup.apply(LinuxResources(pids=LinuxPids(limit=64)))
    with fork_bomb(v1_cgroup):
        peak, _ = fork_bomb_peak(v1_cgroup.stats)
        assert peak == 64, f"expected the bomb to press against exactly 64 tasks, saw {peak}"
        assert_the_host_answers()


def cpu_share_over(cgroup: Cgroup, *, seconds: float) -> float:
    """The fraction of one CPU the cgroup used over the next ``seconds``."""
    start_usage, start = cgroup.stats().cpu_usage_ns, time.monotonic()
    time.sleep(seconds)
    used = cgroup.stats().cpu_usage_ns - start_usage
    return used / ((time.monotonic() - start) * 1e9)


def test_cpu_quota_of_half_a_cpu_holds_a_busy_loop_near_half(
    v1_cgroup: Cgroup, spawn: Spawn
) -> None:
    # The highest weight, so that other work on a busy test machine cannot be what holds the
    # loop back: only the quota may.
    cpu = LinuxCPU(quota=50_000, period=100_000, shares=262_144)
    v1_cgroup.apply(LinuxResources(cpu=cpu))
    child = spawn("print('spinning', flush=True)\nwhile True: pass")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.read_line() == "spinning"
    time.sleep(0.2)  # let the first period's burst pass before measuring
    shares = [cpu_share_over(v1_cgroup, seconds=1.0) for _ in range(2)]
    assert max(shares) < 0.65, f"busy loop used {max(shares):.0%} of a CPU under a 50% quota"
    # Other work on a loaded host can starve the loop below its quota for a moment; it must
    # still come near the quota in at least one window.
    if max(shares) <= 0.35:
        shares.append(cpu_share_over(v1_cgroup, seconds=2.0))
    if max(shares) <= 0.35 and v1_cgroup.stats().cpu_throttled_periods == 0:
        pytest.skip(f"host too busy: the loop got {max(shares):.0%} without ever hitting its quota")
    assert max(shares) > 0.35, f"busy loop used only {max(shares):.0%} of a CPU"
    assert v1_cgroup.stats().cpu_throttled_periods > 0, "the quota never throttled the loop"


def test_freeze_stops_a_busy_loop_and_thaw_resumes_it(v1_cgroup: Cgroup, spawn: Spawn) -> None:
    child = spawn("print('spinning', flush=True)\nwhile True: pass")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.read_line() == "spinning"
    v1_cgroup.freeze()
    assert read(v1_cgroup, "freezer", "freezer.state") == "FROZEN"
    frozen_usage = v1_cgroup.stats().cpu_usage_ns
    time.sleep(0.3)
    assert v1_cgroup.stats().cpu_usage_ns == frozen_usage
    v1_cgroup.thaw()
    assert read(v1_cgroup, "freezer", "freezer.state") == "THAWED"
    time.sleep(0.3)
    assert v1_cgroup.stats().cpu_usage_ns > frozen_usage


def test_kill_signals_every_process_in_the_group(v1_cgroup: Cgroup, spawn: Spawn) -> None:
    child = spawn(
        "import subprocess\n"
        "grandchild = subprocess.Popen(['sleep', '60'])\n"
        "print(grandchild.pid, flush=True)\n"
        "grandchild.wait()\n"
        "sys.stdin.read()"
    )
    v1_cgroup.add_process(child.pid)
    child.release()
    grandchild = int(child.read_line())
    assert v1_cgroup.pids() == sorted([child.pid, grandchild])
    v1_cgroup.kill(signal.SIGTERM)
    assert child.wait() == -signal.SIGTERM
    deadline = time.monotonic() + 5.0
    while v1_cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.01)  # the orphaned grandchild exits on its own schedule
    assert v1_cgroup.pids() == []


def test_destroy_kills_what_is_left_removes_everything_and_is_idempotent(
    v1_cgroup: Cgroup, spawn: Spawn
) -> None:
    v1_cgroup.apply(LinuxResources(pids=LinuxPids(limit=10)))
    child = spawn("")
    v1_cgroup.add_process(child.pid)
    nested = v1_cgroup.paths()["memory"] / "nested"
    nested.mkdir()
    v1_cgroup.destroy()
    assert child.wait() == -signal.SIGKILL
    assert not v1_cgroup.exists()
    assert not any(path.exists() for path in v1_cgroup.paths().values())
    v1_cgroup.destroy()


def test_a_value_the_kernel_rejects_is_named_in_one_line(v1_cgroup: Cgroup) -> None:
    with pytest.raises(InvalidArgument, match=r"cpuset\.cpus rejected 'banana'"):
        v1_cgroup.apply(LinuxResources(cpu=LinuxCPU(cpus="banana")))


def test_explicit_device_rules_replace_the_defaults(v1_cgroup: Cgroup) -> None:
    v1_cgroup.apply(
        LinuxResources(
            devices=[
                LinuxDeviceCgroup(allow=False, access="rwm"),
                LinuxDeviceCgroup(allow=True, type="c", major=1, minor=3, access="rw"),
            ]
        )
    )
    assert read(v1_cgroup, "devices", "devices.list") == "c 1:3 rw"
