"""cgroup drivers for v1, v2 and hybrid hosts, driven by the OCI spec's ``linux.resources``."""

from carte.runtime.cgroups.resources import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxMemory,
    LinuxNetwork,
    LinuxPids,
    LinuxRdma,
    LinuxResources,
    LinuxThrottleDevice,
    LinuxWeightDevice,
)

__all__ = [
    "LinuxBlockIO",
    "LinuxCPU",
    "LinuxDeviceCgroup",
    "LinuxHugepageLimit",
    "LinuxMemory",
    "LinuxNetwork",
    "LinuxPids",
    "LinuxRdma",
    "LinuxResources",
    "LinuxThrottleDevice",
    "LinuxWeightDevice",
]
