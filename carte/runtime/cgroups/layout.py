"""Which cgroup layout this host has (v1, v2 or hybrid) and where each controller lives.

Read from ``/proc/self/mountinfo``: a ``cgroup`` mount per v1 hierarchy (its super options name
its controllers) and at most one ``cgroup2`` mount whose ``cgroup.controllers`` lists what v2
offers. Hybrid means v1 controllers plus a cgroup2 mount (systemd's /sys/fs/cgroup/unified).
"""

from __future__ import annotations

import enum
from pathlib import Path

import msgspec

from carte.api.errors import Unavailable

# Super options of a v1 cgroup mount that are not controller names.
_V1_NON_CONTROLLER_OPTIONS = frozenset(
    {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"}
)


class LayoutKind(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"


class CgroupLayout(msgspec.Struct, frozen=True, kw_only=True):
    """Where the cgroup hierarchies are mounted on this host."""

    kind: LayoutKind
    v1_mounts: dict[str, Path] = msgspec.field(default_factory=dict)
    unified_mount: Path | None = None
    unified_controllers: frozenset[str] = frozenset()

    @property
    def v1_controllers(self) -> frozenset[str]:
        """Controllers mounted on a v1 hierarchy."""
        return frozenset(self.v1_mounts)

    def unified_only(self) -> CgroupLayout:
        """This host's cgroup2 hierarchy alone, as a v2 layout (for the v2 driver on hybrid)."""
        if self.unified_mount is None:
            raise Unavailable("no cgroup2 hierarchy is mounted; mount one (mount -t cgroup2)")
        return CgroupLayout(
            kind=LayoutKind.V2,
            unified_mount=self.unified_mount,
            unified_controllers=self.unified_controllers,
        )


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> CgroupLayout:
    """The cgroup layout described by the text of a mountinfo file.

    Raises `Unavailable` when no cgroup hierarchy is mounted at all.
    """
    v1_mounts: dict[str, Path] = {}
    unified_mount: Path | None = None
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        mount_point = Path(_unescape(fields[4]))
        fs_type = fields[separator + 1]
        super_options = fields[separator + 3].split(",") if len(fields) > separator + 3 else []
        if fs_type == "cgroup2" and unified_mount is None:
            unified_mount = mount_point
        elif fs_type == "cgroup":
            for option in super_options:
                if option in _V1_NON_CONTROLLER_OPTIONS or "=" in option:
                    continue
                v1_mounts.setdefault(option, mount_point)
    unified_controllers: frozenset[str] = frozenset()
    if unified_mount is not None:
        try:
            listed = (unified_mount / "cgroup.controllers").read_text().split()
        except OSError:
            listed = []
        unified_controllers = frozenset(listed)
    if v1_mounts and unified_mount is not None:
        kind = LayoutKind.HYBRID
    elif v1_mounts:
        kind = LayoutKind.V1
    elif unified_mount is not None:
        kind = LayoutKind.V2
    else:
        raise Unavailable(
            "no cgroup hierarchy is mounted; mount cgroup2 on /sys/fs/cgroup "
            "(mount -t cgroup2 none /sys/fs/cgroup)"
        )
    return CgroupLayout(
        kind=kind,
        v1_mounts=v1_mounts,
        unified_mount=unified_mount,
        unified_controllers=unified_controllers,
    )


def detect_layout(mountinfo: Path = Path("/proc/self/mountinfo")) -> CgroupLayout:
    """This process's cgroup layout; raises `Unavailable` when no cgroup is mounted."""
    return parse_mountinfo(mountinfo.read_text())
