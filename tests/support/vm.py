"""Boot Debian's stock kernel with virtme-ng and run one Python script in it.

virtme-ng boots the kernel under QEMU over this machine's own filesystem (read-only), so the
guest runs this virtualenv's Python and Carte's code as they are here. KVM exists on this host
but fails, so the boot is plain emulation: about 35 s on a quiet machine, minutes under load.
Needs `pip install virtme-ng` and `apt-get install qemu-system-x86 linux-image-amd64`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def guest_kernel() -> Path:
    """Debian's 6.1 kernel if installed, else the newest /boot/vmlinuz-*."""
    kernels = sorted(Path("/boot").glob("vmlinuz-6.1*")) or sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        pytest.fail("no kernel in /boot to boot; apt-get install -y linux-image-amd64")
    return kernels[-1]


def run_in_vm(
    script: Path, verdict_prefix: str, *, timeout: float = 900, memory: str = ""
) -> dict[str, Any]:
    """Boot the guest kernel, run `script` there, and return the JSON after `verdict_prefix`
    (`memory`: the guest's, e.g. "2G"; virtme-ng's default otherwise)."""
    bin_dir = Path(sys.executable).parent
    vng = bin_dir / "vng"
    if not vng.exists():
        pytest.fail(f"virtme-ng is not installed in {bin_dir.parent}; pip install virtme-ng")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    command = [str(vng), "-r", str(guest_kernel()), "--disable-kvm", "--cpus", "2"]
    command += ["--memory", memory] if memory else []
    command += ["--", f"{sys.executable} {script}"]
    # the guest reads this tree read-only: stale bytecode would be compiled there at each
    # import, many times slower under emulation than here
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "carte"),
                    str(root / "tests" / "support")], capture_output=True, check=False)  # fmt: skip
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(verdict_prefix)]
    assert verdicts, (
        f"the guest printed no verdict (vng exit {result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    verdict: dict[str, Any] = json.loads(verdicts[-1].removeprefix(verdict_prefix))
    return verdict
