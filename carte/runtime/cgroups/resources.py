"""The OCI runtime-spec ``linux.resources`` object as msgspec Structs.

Field names on the wire are the spec's own (camelCase, with its few irregular spellings such as
``kernelTCP`` and ``throttleReadIOPSDevice``). Unknown fields are ignored rather than rejected:
the runtime spec requires runtimes to ignore properties they do not know, and engines such as
podman write extensions we do not model. ``None`` means "not set: leave the kernel default".
"""

from __future__ import annotations

import msgspec


class LinuxDeviceCgroup(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One device-cgroup rule; ``type`` is "a" (all), "c" or "b"; major/minor None = any."""

    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None


class LinuxMemory(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Memory limits in bytes; ``swap`` is memory plus swap (v1 memsw meaning); -1 = unlimited."""

    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = msgspec.field(default=None, name="kernelTCP")
    swappiness: int | None = None
    disable_oom_killer: bool | None = msgspec.field(default=None, name="disableOOMKiller")
    use_hierarchy: bool | None = msgspec.field(default=None, name="useHierarchy")
    check_before_update: bool | None = msgspec.field(default=None, name="checkBeforeUpdate")


class LinuxCPU(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """CPU shares (relative weight), CFS quota/period in microseconds, realtime and cpuset."""

    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


class LinuxPids(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Maximum number of tasks; zero or negative means unlimited."""

    limit: int


class LinuxWeightDevice(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """A per-device block-IO weight."""

    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


class LinuxThrottleDevice(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A per-device block-IO rate (bytes or operations per second)."""

    major: int
    minor: int
    rate: int


class LinuxBlockIO(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Block-IO weights and throttles."""

    weight: int | None = None
    leaf_weight: int | None = msgspec.field(default=None, name="leafWeight")
    weight_device: list[LinuxWeightDevice] = msgspec.field(
        default_factory=list, name="weightDevice"
    )
    throttle_read_bps_device: list[LinuxThrottleDevice] = msgspec.field(
        default_factory=list, name="throttleReadBpsDevice"
    )
    throttle_write_bps_device: list[LinuxThrottleDevice] = msgspec.field(
        default_factory=list, name="throttleWriteBpsDevice"
    )
    throttle_read_iops_device: list[LinuxThrottleDevice] = msgspec.field(
        default_factory=list, name="throttleReadIOPSDevice"
    )
    throttle_write_iops_device: list[LinuxThrottleDevice] = msgspec.field(
        default_factory=list, name="throttleWriteIOPSDevice"
    )


class LinuxHugepageLimit(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """A hugetlb limit for one page size such as "2MB"."""

    page_size: str
    limit: int


class LinuxInterfacePriority(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A net_prio priority for one interface."""

    name: str
    priority: int


class LinuxNetwork(msgspec.Struct, kw_only=True, omit_defaults=True):
    """net_cls class id and net_prio priorities."""

    class_id: int | None = msgspec.field(default=None, name="classID")
    priorities: list[LinuxInterfacePriority] = msgspec.field(default_factory=list)


class LinuxRdma(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """RDMA limits for one device."""

    hca_handles: int | None = None
    hca_objects: int | None = None


class LinuxResources(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The spec's ``linux.resources``; each absent section leaves that controller untouched."""

    devices: list[LinuxDeviceCgroup] = msgspec.field(default_factory=list)
    memory: LinuxMemory | None = None
    cpu: LinuxCPU | None = None
    pids: LinuxPids | None = None
    block_io: LinuxBlockIO | None = msgspec.field(default=None, name="blockIO")
    hugepage_limits: list[LinuxHugepageLimit] = msgspec.field(
        default_factory=list, name="hugepageLimits"
    )
    network: LinuxNetwork | None = None
    rdma: dict[str, LinuxRdma] = msgspec.field(default_factory=dict)
    unified: dict[str, str] = msgspec.field(default_factory=dict)
