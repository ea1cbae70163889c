"""The container-tools handler: `TopContainer` and `GetContainerStats`, read from the running
container's cgroup (the runtime's driver for v1, v2 or hybrid hosts) and the host's /proc.

CPU % is the cgroup's CPU time over wall time between two readings, per host CPU as Docker
counts it (a busy loop on one CPU reads 100 %): the reading before is the previous request's
when it is recent, else one taken `_SAMPLE_SECONDS` earlier.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from carte.api.containers import ContainerLocation, ContainerStats, TopResult
from carte.api.errors import Conflict, NotFound
from carte.api.events import GetContainerStats, ResolveContainer, TopContainer
from carte.engine import Handler, HandlerContext, on
from carte.handlers.containers._top import TITLES, process_table
from carte.runtime.cgroups import Cgroup, open_cgroup
from carte.runtime.state import load_record

_SAMPLE_SECONDS = 0.25
_RECENT_SECONDS = 10.0


class ContainerToolsHandler(Handler):
    """top and stats for running containers."""

    name = "container-tools"
    requires = ("containers",)

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self._limiter = trio.CapacityLimiter(4)
        self._last_cpu: dict[str, tuple[float, int]] = {}

    async def _running(self, ref: str, what: str) -> ContainerLocation:
        location = await self.ctx.bus.request(ResolveContainer(ref=ref))
        if location.status not in ("running", "paused"):
            raise Conflict(
                f'cannot {what} container "{location.name}": it is not running '
                f"({location.status}); start it first (carte start {location.name})"
            )
        return location

    @on(TopContainer)
    async def top(self, command: TopContainer) -> TopResult:
        """The container's processes; `Conflict` when it is not running."""
        location = await self._running(command.ref, "list the processes of")

        def read() -> list[list[str]]:
            return process_table(_cgroup(location).pids())

        rows = await trio.to_thread.run_sync(read, limiter=self._limiter)
        return TopResult(titles=list(TITLES), processes=rows)

    @on(GetContainerStats)
    async def stats(self, command: GetContainerStats) -> ContainerStats:
        """CPU %, memory usage and limit, pids, network and block I/O bytes of a running
        container; `Conflict` otherwise."""
        location = await self._running(command.ref, "read the stats of")
        cgroup = await trio.to_thread.run_sync(_cgroup, location, limiter=self._limiter)
        before = self._last_cpu.get(location.id)
        if before is None or time.monotonic() - before[0] > _RECENT_SECONDS:
            first = await trio.to_thread.run_sync(cgroup.stats, limiter=self._limiter)
            before = (time.monotonic(), first.cpu_usage_ns)
            await trio.sleep(_SAMPLE_SECONDS)
        reading = await trio.to_thread.run_sync(cgroup.stats, limiter=self._limiter)
        now = time.monotonic()
        self._last_cpu[location.id] = (now, reading.cpu_usage_ns)
        elapsed_ns = max((now - before[0]) * 1e9, 1.0)
        cpu_percent = max(0, reading.cpu_usage_ns - before[1]) / elapsed_ns * 100.0
        limit = reading.memory_limit
        host_memory = await trio.to_thread.run_sync(_host_memory)
        pids = reading.pids_current or len(await trio.to_thread.run_sync(cgroup.pids))
        traffic = await trio.to_thread.run_sync(_io_counters, location, limiter=self._limiter)
        return ContainerStats(
            id=location.id,
            name=location.name,
            cpu_usage_ns=reading.cpu_usage_ns,
            cpu_percent=round(cpu_percent, 2),
            memory_usage=reading.memory_usage,
            memory_limit=min(limit, host_memory) if limit else host_memory,
            pids=pids,
            oom_kills=reading.oom_kills,
            network_rx_bytes=traffic[0],
            network_tx_bytes=traffic[1],
            block_read_bytes=traffic[2],
            block_write_bytes=traffic[3],
        )


def _cgroup(location: ContainerLocation) -> Cgroup:
    """The container's cgroup, from the runtime's state record (its default path otherwise)."""
    try:
        path = load_record(Path(location.state_dir), location.id).cgroups_path
    except NotFound:
        path = f"/carte/{location.id}"
    return open_cgroup(path)


def _host_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _io_counters(location: ContainerLocation) -> tuple[int, int, int, int]:
    """Network rx/tx bytes (every interface of the container's network namespace but lo, 0
    with the host network) and block read/write bytes of its cgroup, read through its pid."""
    rx = tx = 0
    if location.pid and location.network != "host":
        try:
            lines = Path(f"/proc/{location.pid}/net/dev").read_text().splitlines()[2:]
        except OSError:
            lines = []
        for line in lines:
            interface, _, counters = line.partition(":")
            fields = counters.split()
            if interface.strip() != "lo" and len(fields) > 8:
                rx, tx = rx + int(fields[0]), tx + int(fields[8])
    read, write = _block_io(location.pid) if location.pid else (0, 0)
    return rx, tx, read, write


def _block_io(pid: int) -> tuple[int, int]:
    """Block bytes read and written by the cgroup of ``pid`` (v1 blkio, else v2 io.stat)."""
    try:
        memberships = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return 0, 0
    paths = {}
    for line in memberships:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") or [""]:
            paths[controller] = path
    read = write = 0
    if "blkio" in paths:
        stats = Path("/sys/fs/cgroup/blkio") / paths["blkio"].lstrip("/")
        for line in _lines(stats / "blkio.throttle.io_service_bytes_recursive"):
            fields = line.split()
            if len(fields) == 3 and fields[1] in ("Read", "Write"):
                read += int(fields[2]) if fields[1] == "Read" else 0
                write += int(fields[2]) if fields[1] == "Write" else 0
        return read, write
    unified = Path("/sys/fs/cgroup") / paths.get("", "/").lstrip("/")
    for line in _lines(unified / "io.stat"):
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            read += int(value) if key == "rbytes" else 0
            write += int(value) if key == "wbytes" else 0
    return read, write


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
