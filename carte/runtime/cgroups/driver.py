"""Choosing the driver for this host: `open_cgroup` returns a v1 or v2 `Cgroup`."""

from __future__ import annotations

from carte.runtime.cgroups.cgroup import Cgroup, normalize_cgroups_path
from carte.runtime.cgroups.layout import CgroupLayout, LayoutKind, detect_layout
from carte.runtime.cgroups.v1 import V1Cgroup
from carte.runtime.cgroups.v2 import V2Cgroup


def open_cgroup(cgroups_path: str, *, layout: CgroupLayout | None = None) -> Cgroup:
    """The cgroup named by a spec's ``linux.cgroupsPath``, not yet created.

    Relative paths go under /carte. On a hybrid host the v1 controllers are used. Raises
    `InvalidArgument` for a malformed path and `Unavailable` when no cgroup is mounted.
    """
    path = normalize_cgroups_path(cgroups_path)
    layout = layout or detect_layout()
    if layout.kind is LayoutKind.V2 and layout.unified_mount is not None:
        return V2Cgroup(path, layout.unified_mount)
    return V1Cgroup(path, layout)
