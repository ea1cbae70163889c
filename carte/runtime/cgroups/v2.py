"""The cgroup v2 driver: one directory in the unified hierarchy.

Controllers reach a cgroup only when every ancestor lists them in ``cgroup.subtree_control``;
`create` enables what each ancestor offers. Device rules are an eBPF program attached to the
cgroup (device_filter.py); it works without any controller, so also on a hybrid host's
controller-less unified hierarchy.
"""

from __future__ import annotations

from pathlib import Path

from carte.api.errors import CarteError, InvalidArgument
from carte.runtime.cgroups.cgroup import Cgroup
from carte.runtime.cgroups.cgroupfs import (
    make_directories,
    read_keyed,
    read_optional_int,
    read_text,
    wait_until,
    write_file,
)
from carte.runtime.cgroups.device_filter import attach_device_filter
from carte.runtime.cgroups.resources import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxMemory,
    LinuxNetwork,
)
from carte.runtime.cgroups.stats import CgroupStats

# Controllers a container cgroup can use; the rest (perf_event...) need no enabling.
_CONTAINER_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
_DEFAULT_CFS_PERIOD_US = 100_000
_NS_PER_USEC = 1000


def cpu_weight_from_shares(shares: int) -> int:
    """The OCI conversion of v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000)."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight_from_blkio_weight(weight: int) -> int:
    """The OCI conversion of v1 blkio.weight (10..1000) to v2 io.weight (1..10000)."""
    if weight <= 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def swap_max_from_spec(limit: int | None, swap: int) -> str:
    """memory.swap.max for the spec's swap, which counts memory plus swap as v1 memsw does.

    Raises `InvalidArgument` when swap is set without a memory limit or below it.
    """
    if swap == -1:
        return "max"
    if limit is None or limit == 0:
        raise InvalidArgument(
            "linux.resources.memory.swap is set without memory.limit; set memory.limit too"
        )
    if limit == -1:
        raise InvalidArgument(
            "linux.resources.memory.swap is limited while memory.limit is unlimited (-1); "
            "set swap to -1 or give a memory limit"
        )
    if swap < limit:
        raise InvalidArgument(
            f"linux.resources.memory.swap {swap} is below memory.limit {limit}; swap counts "
            "memory plus swap, so give at least the memory limit"
        )
    return str(swap - limit)


class V2Cgroup(Cgroup):
    """A container cgroup in a cgroup2 hierarchy mounted at ``mount``."""

    def __init__(self, path: str, mount: Path) -> None:
        super().__init__(path)
        self._mount = mount
        self._dir = mount / path.lstrip("/")

    def paths(self) -> dict[str, Path]:
        return {"unified": self._dir}

    def create(self) -> None:
        """mkdir each level and enable every offered container controller above the leaf.

        A level that cannot enable a controller (it holds processes itself, or the controller
        is busy on v1) is skipped; a limit needing that controller later fails naming its file.
        """
        levels = make_directories(self._mount, self.path)
        for parent in [self._mount, *levels[:-1]]:
            offered = read_text(parent, "cgroup.controllers").split()
            enabled = read_text(parent, "cgroup.subtree_control").split()
            for controller in _CONTAINER_CONTROLLERS:
                if controller in offered and controller not in enabled:
                    try:
                        write_file(parent, "cgroup.subtree_control", f"+{controller}")
                    except CarteError:
                        continue

    def freeze(self) -> None:
        write_file(self._dir, "cgroup.freeze", 1)
        wait_until(lambda: self._frozen() == 1, what=f"cgroup {self.path} is frozen")

    def thaw(self) -> None:
        write_file(self._dir, "cgroup.freeze", 0)
        wait_until(lambda: self._frozen() == 0, what=f"cgroup {self.path} is thawed")

    def events(self) -> dict[str, int]:
        """The cgroup.events counters: "populated" and "frozen" (0 or 1)."""
        return read_keyed(self._dir, "cgroup.events")

    def oom_kill_count(self) -> int:
        return read_keyed(self._dir, "memory.events").get("oom_kill", 0)

    def stats(self) -> CgroupStats:
        cpu = read_keyed(self._dir, "cpu.stat")
        memory_usage = read_optional_int(self._dir, "memory.current") or 0
        return CgroupStats(
            cpu_usage_ns=cpu.get("usage_usec", 0) * _NS_PER_USEC,
            cpu_user_ns=cpu.get("user_usec", 0) * _NS_PER_USEC,
            cpu_system_ns=cpu.get("system_usec", 0) * _NS_PER_USEC,
            cpu_periods=cpu.get("nr_periods", 0),
            cpu_throttled_periods=cpu.get("nr_throttled", 0),
            cpu_throttled_ns=cpu.get("throttled_usec", 0) * _NS_PER_USEC,
            memory_usage=memory_usage,
            memory_limit=read_optional_int(self._dir, "memory.max"),
            memory_max_usage=read_optional_int(self._dir, "memory.peak") or memory_usage,
            swap_usage=read_optional_int(self._dir, "memory.swap.current") or 0,
            pids_current=read_optional_int(self._dir, "pids.current") or 0,
            pids_peak=read_optional_int(self._dir, "pids.peak") or 0,
            pids_refused=read_keyed(self._dir, "pids.events").get("max", 0),
            pids_limit=read_optional_int(self._dir, "pids.max"),
            oom_kills=self.oom_kill_count(),
        )

    def _frozen(self) -> int:
        return self.events().get("frozen", 0)

    def _kill_all_at_once(self) -> bool:
        if not (self._dir / "cgroup.kill").exists():
            return False
        write_file(self._dir, "cgroup.kill", 1)
        return True

    def _can_freeze(self) -> bool:
        return (self._dir / "cgroup.freeze").exists()

    def _dir_for(self, controller: str) -> Path:
        return self._dir

    def _set_devices(self, rules: list[LinuxDeviceCgroup]) -> None:
        attach_device_filter(str(self._dir), rules)

    def _set_network(self, network: LinuxNetwork) -> None:
        pass  # net_cls/net_prio exist only in v1; cgroup v2 has nothing to set

    def _set_unified(self, unified: dict[str, str]) -> None:
        for key, value in unified.items():
            if "/" in key or key.startswith(".") or "." not in key:
                raise InvalidArgument(
                    f"linux.resources.unified key {key!r} is not a cgroup file name; "
                    "give a name such as memory.high"
                )
            write_file(self._dir, key, value)

    def _set_cpu(self, cpu: LinuxCPU) -> None:
        if cpu.realtime_runtime or cpu.realtime_period:
            raise InvalidArgument(
                "linux.resources.cpu.realtimeRuntime/realtimePeriod are not supported on "
                "cgroup v2; remove them"
            )
        if cpu.shares:
            write_file(self._dir, "cpu.weight", cpu_weight_from_shares(cpu.shares))
        if cpu.quota or cpu.period:
            quota = str(cpu.quota) if cpu.quota and cpu.quota > 0 else "max"
            write_file(self._dir, "cpu.max", f"{quota} {cpu.period or _DEFAULT_CFS_PERIOD_US}")
        if cpu.burst is not None:
            write_file(self._dir, "cpu.max.burst", cpu.burst)
        if cpu.idle is not None:
            write_file(self._dir, "cpu.idle", cpu.idle)
        if cpu.cpus is not None:
            write_file(self._dir, "cpuset.cpus", cpu.cpus)
        if cpu.mems is not None:
            write_file(self._dir, "cpuset.mems", cpu.mems)

    def _set_memory(self, memory: LinuxMemory) -> None:
        limit = memory.limit if memory.limit else None
        if memory.swap:
            swap_max = swap_max_from_spec(limit, memory.swap)
            # memory.swap.max exists only with swap accounting; without it there is no swap
            # to bound, as on v1 without memsw.
            if (self._dir / "memory.swap.max").exists():
                write_file(self._dir, "memory.swap.max", swap_max)
        if limit is not None:
            write_file(self._dir, "memory.max", limit if limit > 0 else "max")
        if memory.reservation:
            write_file(self._dir, "memory.low", memory.reservation)
        # swappiness, kernel, kernelTCP and disableOOMKiller have no cgroup v2 file; runc
        # ignores them there as well.

    def _set_block_io(self, block_io: LinuxBlockIO) -> None:
        bfq = (self._dir / "io.bfq.weight").exists()
        if block_io.weight:
            if bfq:
                write_file(self._dir, "io.bfq.weight", block_io.weight)
            else:
                weight = io_weight_from_blkio_weight(block_io.weight)
                write_file(self._dir, "io.weight", f"default {weight}")
        for device in block_io.weight_device:
            if device.weight:
                file_name = "io.bfq.weight" if bfq else "io.weight"
                weight = device.weight if bfq else io_weight_from_blkio_weight(device.weight)
                write_file(self._dir, file_name, f"{device.major}:{device.minor} {weight}")
        for key, throttles in (
            ("rbps", block_io.throttle_read_bps_device),
            ("wbps", block_io.throttle_write_bps_device),
            ("riops", block_io.throttle_read_iops_device),
            ("wiops", block_io.throttle_write_iops_device),
        ):
            for throttle in throttles:
                rate = throttle.rate if throttle.rate > 0 else "max"
                write_file(self._dir, "io.max", f"{throttle.major}:{throttle.minor} {key}={rate}")
