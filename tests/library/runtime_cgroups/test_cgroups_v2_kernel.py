"""The v2 driver's limit files in a real cgroup-v2 kernel, booted with virtme-ng.

This host keeps its controllers on cgroup v1, so memory.max, pids.max, cpu.max, cpuset, io.max
and OOM counting in memory.events can only be seen in another kernel: virtme-ng boots Debian's
kernel under QEMU over this machine's own (read-only) filesystem, with cgroup2 on /sys/fs/cgroup
and every controller, and runs cgroup_v2_guest_check.py there with this virtualenv's Python.
The boot itself is tests/support/vm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.vm import run_in_vm

GUEST_CHECK = Path(__file__).with_name("cgroup_v2_guest_check.py")
VERDICT_PREFIX = "CARTE_V2_VERDICT "


@pytest.mark.slow
def test_v2_driver_limits_bite_in_a_real_cgroup_v2_kernel() -> None:
    verdict = run_in_vm(GUEST_CHECK, VERDICT_PREFIX, timeout=600)
    failed = {name: check for name, check in verdict["checks"].items() if not check["ok"]}
    assert not failed, f"in kernel {verdict['kernel']}: {json.dumps(failed, indent=1)}"
    expected = {
        "layout",
        "controllers_enabled",
        "limit_files",
        "live_update",
        "oom_kill",
        "stats",
        "pids_fork_bomb",
        "cpu_quota",
        "io_max",
        "device_filter",
        "freeze_thaw",
        "kill",
        "destroy",
    }
    assert set(verdict["checks"]) == expected
