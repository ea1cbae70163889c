"""The cgroup v1 driver: one directory per controller hierarchy (plus the unified one on hybrid).

On a hybrid host the container also gets a directory in the controller-less cgroup2 hierarchy:
it costs nothing, gives a cgroup namespace a sane ``0::/`` entry and, through ``cgroup.kill``,
a way to kill every task at once.
"""

from __future__ import annotations

from pathlib import Path

from carte.api.errors import InvalidArgument, Unavailable
from carte.runtime.cgroups.cgroup import Cgroup
from carte.runtime.cgroups.cgroupfs import (
    make_directories,
    read_keyed,
    read_optional_int,
    read_text,
    wait_until,
    write_file,
)
from carte.runtime.cgroups.devices import v1_rule
from carte.runtime.cgroups.layout import CgroupLayout
from carte.runtime.cgroups.resources import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxMemory,
    LinuxNetwork,
)
from carte.runtime.cgroups.stats import CgroupStats

UNIFIED = "unified"
# v1 reports "no limit" as the largest page-aligned long rather than "max".
_V1_UNLIMITED_FLOOR = 1 << 62


class V1Cgroup(Cgroup):
    """A container cgroup on a v1 or hybrid host."""

    def __init__(self, path: str, layout: CgroupLayout) -> None:
        super().__init__(path)
        relative = path.lstrip("/")
        self._mounts: dict[str, Path] = dict(layout.v1_mounts)
        if layout.unified_mount is not None:
            self._mounts[UNIFIED] = layout.unified_mount
        self._dirs = {name: mount / relative for name, mount in self._mounts.items()}

    def paths(self) -> dict[str, Path]:
        return dict(self._dirs)

    def create(self) -> None:
        """mkdir in every hierarchy; new cpuset levels inherit their parent's cpus and mems."""
        created: set[Path] = set()
        for name, mount in self._mounts.items():
            if self._dirs[name] in created:
                continue
            levels = make_directories(mount, self.path)
            created.add(self._dirs[name])
            if name == "cpuset":
                _fill_cpuset_from_parents(levels)

    def freeze(self) -> None:
        freezer = self._dir_for("freezer")
        write_file(freezer, "freezer.state", "FROZEN")

        def frozen() -> bool:
            if read_text(freezer, "freezer.state") == "FROZEN":
                return True
            # A task caught mid-syscall can leave the group FREEZING; asking again nudges it.
            write_file(freezer, "freezer.state", "FROZEN")
            return False

        wait_until(frozen, what=f"cgroup {self.path} is frozen")

    def thaw(self) -> None:
        freezer = self._dir_for("freezer")
        write_file(freezer, "freezer.state", "THAWED")
        wait_until(
            lambda: read_text(freezer, "freezer.state") == "THAWED",
            what=f"cgroup {self.path} is thawed",
        )

    def oom_kill_count(self) -> int:
        memory = self._dirs.get("memory")
        if memory is None:
            return 0
        return read_keyed(memory, "memory.oom_control").get("oom_kill", 0)

    def stats(self) -> CgroupStats:
        cpuacct = self._dirs.get("cpuacct")
        cpu = self._dirs.get("cpu")
        memory = self._dirs.get("memory")
        pids = self._dirs.get("pids")
        throttling = read_keyed(cpu, "cpu.stat") if cpu is not None else {}
        usage = _optional(cpuacct, "cpuacct.usage") or 0
        memory_usage = _optional(memory, "memory.usage_in_bytes") or 0
        memsw_usage = _optional(memory, "memory.memsw.usage_in_bytes")
        return CgroupStats(
            cpu_usage_ns=usage,
            cpu_user_ns=_optional(cpuacct, "cpuacct.usage_user") or 0,
            cpu_system_ns=_optional(cpuacct, "cpuacct.usage_sys") or 0,
            cpu_periods=throttling.get("nr_periods", 0),
            cpu_throttled_periods=throttling.get("nr_throttled", 0),
            cpu_throttled_ns=throttling.get("throttled_time", 0),
            memory_usage=memory_usage,
            memory_limit=_limit(_optional(memory, "memory.limit_in_bytes")),
            memory_max_usage=_optional(memory, "memory.max_usage_in_bytes") or 0,
            swap_usage=max(0, memsw_usage - memory_usage) if memsw_usage is not None else 0,
            pids_current=_optional(pids, "pids.current") or 0,
            pids_peak=_optional(pids, "pids.peak") or 0,
            pids_refused=read_keyed(pids, "pids.events").get("max", 0) if pids else 0,
            pids_limit=_optional(pids, "pids.max"),
            oom_kills=self.oom_kill_count(),
        )

    def _kill_all_at_once(self) -> bool:
        unified = self._dirs.get(UNIFIED)
        if unified is None or not (unified / "cgroup.kill").exists():
            return False
        write_file(unified, "cgroup.kill", 1)
        return True

    def _can_freeze(self) -> bool:
        return "freezer" in self._dirs

    def _dir_for(self, name: str) -> Path:
        directory = self._dirs.get(name)
        if directory is None:
            raise Unavailable(
                f"the cgroup v1 {name} controller is not mounted on this host; "
                f"mount it (mount -t cgroup -o {name} cgroup /sys/fs/cgroup/{name})"
            )
        return directory

    def _set_devices(self, rules: list[LinuxDeviceCgroup]) -> None:
        devices = self._dir_for("devices")
        for rule in rules:
            write_file(devices, "devices.allow" if rule.allow else "devices.deny", v1_rule(rule))

    _HUGETLB_LIMIT = "limit_in_bytes"

    def _set_network(self, network: LinuxNetwork) -> None:
        if network.class_id is not None:
            write_file(self._dir_for("net_cls"), "net_cls.classid", network.class_id)
        for priority in network.priorities:
            write_file(
                self._dir_for("net_prio"),
                "net_prio.ifpriomap",
                f"{priority.name} {priority.priority}",
            )

    def _set_unified(self, unified: dict[str, str]) -> None:
        raise InvalidArgument(
            "linux.resources.unified needs cgroup v2 controllers, but this host keeps its "
            "controllers on cgroup v1; remove linux.resources.unified"
        )

    def _set_cpu(self, cpu: LinuxCPU) -> None:
        if cpu.cpus is not None or cpu.mems is not None:
            cpuset = self._dir_for("cpuset")
            if cpu.cpus is not None:
                write_file(cpuset, "cpuset.cpus", cpu.cpus)
            if cpu.mems is not None:
                write_file(cpuset, "cpuset.mems", cpu.mems)
        cfs_and_rt = (cpu.shares, cpu.quota, cpu.period, cpu.burst, cpu.idle)
        if all(value is None for value in (*cfs_and_rt, cpu.realtime_period, cpu.realtime_runtime)):
            return
        directory = self._dir_for("cpu")
        if cpu.shares:
            write_file(directory, "cpu.shares", cpu.shares)
        if cpu.period:
            write_file(directory, "cpu.cfs_period_us", cpu.period)
        if cpu.quota:
            write_file(directory, "cpu.cfs_quota_us", cpu.quota if cpu.quota > 0 else -1)
        if cpu.burst is not None:
            write_file(directory, "cpu.cfs_burst_us", cpu.burst)
        if cpu.realtime_period:
            write_file(directory, "cpu.rt_period_us", cpu.realtime_period)
        if cpu.realtime_runtime is not None:
            write_file(directory, "cpu.rt_runtime_us", cpu.realtime_runtime)
        if cpu.idle is not None:
            write_file(directory, "cpu.idle", cpu.idle)

    def _set_memory(self, memory: LinuxMemory) -> None:
        directory = self._dir_for("memory")
        # Without swap accounting (no memsw files) a swap limit cannot be enforced; runc and
        # Docker ignore it too, and the memory limit alone still holds.
        has_memsw = (directory / "memory.memsw.limit_in_bytes").exists()
        swap = memory.swap if has_memsw and memory.swap else None
        limit = memory.limit if memory.limit else None
        if limit is not None and swap is not None:
            # memsw must never drop below the memory limit, so the order of the writes depends
            # on whether the limits grow or shrink; try shrinking order, then the other.
            try:
                write_file(directory, "memory.limit_in_bytes", limit)
                write_file(directory, "memory.memsw.limit_in_bytes", swap)
            except InvalidArgument:
                write_file(directory, "memory.memsw.limit_in_bytes", swap)
                write_file(directory, "memory.limit_in_bytes", limit)
        elif limit is not None:
            write_file(directory, "memory.limit_in_bytes", limit)
        elif swap is not None:
            write_file(directory, "memory.memsw.limit_in_bytes", swap)
        if memory.reservation:
            write_file(directory, "memory.soft_limit_in_bytes", memory.reservation)
        if memory.kernel_tcp:
            write_file(directory, "memory.kmem.tcp.limit_in_bytes", memory.kernel_tcp)
        if memory.swappiness is not None and memory.swappiness >= 0:
            if memory.swappiness > 100:
                raise InvalidArgument(
                    f"linux.resources.memory.swappiness {memory.swappiness} is out of range; "
                    "give a value from 0 to 100"
                )
            write_file(directory, "memory.swappiness", memory.swappiness)
        if memory.disable_oom_killer is not None:
            write_file(directory, "memory.oom_control", int(memory.disable_oom_killer))
        # memory.kernel is ignored: kernels since 6.x refuse kmem limits (runc ignores it too);
        # useHierarchy is ignored: the kernel always uses the hierarchy now.

    def _set_block_io(self, block_io: LinuxBlockIO) -> None:
        directory = self._dir_for("blkio")
        weight_file = _first_existing(directory, "blkio.weight", "blkio.bfq.weight")
        weight_device_file = _first_existing(
            directory, "blkio.weight_device", "blkio.bfq.weight_device"
        )
        if block_io.weight is not None:
            write_file(directory, weight_file, block_io.weight)
        if block_io.leaf_weight is not None:
            write_file(directory, "blkio.leaf_weight", block_io.leaf_weight)
        for device in block_io.weight_device:
            if device.weight is not None:
                write_file(
                    directory, weight_device_file, f"{device.major}:{device.minor} {device.weight}"
                )
        for file_name, throttles in (
            ("blkio.throttle.read_bps_device", block_io.throttle_read_bps_device),
            ("blkio.throttle.write_bps_device", block_io.throttle_write_bps_device),
            ("blkio.throttle.read_iops_device", block_io.throttle_read_iops_device),
            ("blkio.throttle.write_iops_device", block_io.throttle_write_iops_device),
        ):
            for throttle in throttles:
                write_file(
                    directory, file_name, f"{throttle.major}:{throttle.minor} {throttle.rate}"
                )


def _fill_cpuset_from_parents(levels: list[Path]) -> None:
    """A new v1 cpuset starts empty and refuses tasks; copy cpus and mems down each level."""
    for level in levels:
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not read_text(level, name):
                write_file(level, name, read_text(level.parent, name))


def _first_existing(directory: Path, *names: str) -> str:
    for name in names:
        if (directory / name).exists():
            return name
    return names[0]


def _optional(directory: Path | None, name: str) -> int | None:
    return None if directory is None else read_optional_int(directory, name)


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= _V1_UNLIMITED_FLOOR else value
