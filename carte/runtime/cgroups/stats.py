"""A point-in-time reading of one cgroup's counters, the same shape for v1 and v2."""

from __future__ import annotations

import msgspec


class CgroupStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one cgroup; a limit of None means unlimited (or not readable here).

    ``pids_peak`` is the kernel's high-water mark (0 on kernels without pids.peak);
    ``pids_refused`` counts forks the pids limit refused.
    """

    cpu_usage_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cpu_periods: int = 0
    cpu_throttled_periods: int = 0
    cpu_throttled_ns: int = 0
    memory_usage: int = 0
    memory_limit: int | None = None
    memory_max_usage: int = 0
    swap_usage: int = 0
    pids_current: int = 0
    pids_peak: int = 0
    pids_refused: int = 0
    pids_limit: int | None = None
    oom_kills: int = 0
