"""cgroup drivers for v1, v2 and hybrid hosts, driven by the OCI spec's ``linux.resources``."""

from carte.runtime.cgroups.cgroup import Cgroup, normalize_cgroups_path
from carte.runtime.cgroups.devices import default_devices
from carte.runtime.cgroups.driver import open_cgroup
from carte.runtime.cgroups.layout import CgroupLayout, LayoutKind, detect_layout
from carte.runtime.cgroups.resources import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxInterfacePriority,
    LinuxMemory,
    LinuxNetwork,
    LinuxPids,
    LinuxRdma,
    LinuxResources,
    LinuxThrottleDevice,
    LinuxWeightDevice,
)
from carte.runtime.cgroups.stats import CgroupStats
from carte.runtime.cgroups.v1 import V1Cgroup
from carte.runtime.cgroups.v2 import V2Cgroup

__all__ = [
    "Cgroup",
    "CgroupLayout",
    "CgroupStats",
    "LayoutKind",
    "LinuxBlockIO",
    "LinuxCPU",
    "LinuxDeviceCgroup",
    "LinuxHugepageLimit",
    "LinuxInterfacePriority",
    "LinuxMemory",
    "LinuxNetwork",
    "LinuxPids",
    "LinuxRdma",
    "LinuxResources",
    "LinuxThrottleDevice",
    "LinuxWeightDevice",
    "V1Cgroup",
    "V2Cgroup",
    "default_devices",
    "detect_layout",
    "normalize_cgroups_path",
    "open_cgroup",
]
