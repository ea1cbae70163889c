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
        """CPU %, memory usage and limit, pids of a running container; `Conflict` otherwise."""
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
        return ContainerStats(
            id=location.id,
            name=location.name,
            cpu_usage_ns=reading.cpu_usage_ns,
            cpu_percent=round(cpu_percent, 2),
            memory_usage=reading.memory_usage,
            memory_limit=min(limit, host_memory) if limit else host_memory,
            pids=pids,
            oom_kills=reading.oom_kills,
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
