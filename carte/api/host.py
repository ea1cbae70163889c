"""Host facts both the daemon (`/v1/info`) and the client (`carte system check`) report.

Standard library plus the `carte.api.system` Structs only, so the client can use it.
"""

import os
from pathlib import Path
from typing import Literal

from carte.api.system import CgroupLayout, CgroupMount

PROC_MOUNTS = Path("/proc/mounts")


def kernel_release() -> str:
    """The running kernel's release string, e.g. "6.1.0-18-amd64"."""
    return os.uname().release


def read_cgroup_layout(mounts_file: Path = PROC_MOUNTS) -> CgroupLayout:
    """Read the cgroup mounts from /proc/mounts into a layout.

    An unreadable mounts file yields mode "none" rather than an error: the caller reports it.
    """
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return CgroupLayout(mode="none")
    mounts: list[CgroupMount] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        _, path, fstype, options = fields[:4]
        if fstype == "cgroup2":
            mounts.append(CgroupMount(path=path, version=2))
        elif fstype == "cgroup":
            controllers = [opt for opt in options.split(",") if opt in _V1_CONTROLLERS]
            named = [opt for opt in options.split(",") if opt.startswith("name=")]
            mounts.append(CgroupMount(path=path, version=1, controllers=controllers or named))
    has_v1 = any(
        m.version == 1 and m.controllers and m.controllers[0] in _V1_CONTROLLERS for m in mounts
    )
    has_v2 = any(m.version == 2 for m in mounts)
    mode: Literal["v1", "v2", "hybrid", "none"]
    if has_v1 and has_v2:
        mode = "hybrid"
    elif has_v1:
        mode = "v1"
    elif has_v2:
        mode = "v2"
    else:
        mode = "none"
    return CgroupLayout(mode=mode, mounts=mounts)


def v2_controllers(layout: CgroupLayout) -> list[str]:
    """Controllers available at the root of the first cgroup2 mount (empty when none)."""
    for mount in layout.mounts:
        if mount.version == 2:
            try:
                return (Path(mount.path) / "cgroup.controllers").read_text().split()
            except OSError:
                return []
    return []


_V1_CONTROLLERS = frozenset(
    {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "blkio",
        "perf_event",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    }
)
