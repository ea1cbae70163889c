"""The v2 driver's limit files in a real cgroup-v2 kernel, booted with virtme-ng.

This host keeps its controllers on cgroup v1, so memory.max, pids.max, cpu.max, cpuset, io.max
and OOM counting in memory.events can only be seen in another kernel: virtme-ng boots Debian's
kernel under QEMU over this machine's own (read-only) filesystem, with cgroup2 on /sys/fs/cgroup
and every controller, and runs cgroup_v2_guest_check.py there with this virtualenv's Python.
Needs `pip install virtme-ng` and `apt-get install qemu-system-x86 linux-image-amd64`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GUEST_CHECK = Path(__file__).with_name("cgroup_v2_guest_check.py")
VERDICT_PREFIX = "CARTE_V2_VERDICT "


def guest_kernel() -> Path:
    """Debian's 6.1 kernel if installed, else the newest /boot/vmlinuz-*."""
    kernels = sorted(Path("/boot").glob("vmlinuz-6.1*")) or sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        pytest.fail("no kernel in /boot to boot; apt-get install -y linux-image-amd64")
    return kernels[-1]


@pytest.mark.slow
def test_v2_driver_limits_bite_in_a_real_cgroup_v2_kernel() -> None:
    bin_dir = Path(sys.executable).parent
    vng = bin_dir / "vng"
    if not vng.exists():
        pytest.fail(f"virtme-ng is not installed in {bin_dir.parent}; pip install virtme-ng")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    # KVM exists here but fails; plain emulation boots in about 35 s, the checks take longer.
    command = [str(vng), "-r", str(guest_kernel()), "--disable-kvm", "--cpus", "2"]
    command += ["--", f"{sys.executable} {GUEST_CHECK}"]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    verdict_lines = [line for line in result.stdout.splitlines() if line.startswith(VERDICT_PREFIX)]
    assert verdict_lines, (
        f"the guest printed no verdict (vng exit {result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    verdict = json.loads(verdict_lines[-1].removeprefix(VERDICT_PREFIX))
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
