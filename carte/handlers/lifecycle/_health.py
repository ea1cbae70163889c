"""The health handler: runs each running container's healthcheck and reports its health.

For every started container whose config has a healthcheck (from --health-* or the image's
HEALTHCHECK, merged by the containers handler), one task probes it with `ExecInContainer`
(see health_probe.py for Docker's rules). Every result is stored through `SetContainerHealth`
(the containers handler owns the record, so inspect and ps show it) and every status change is
published as `HealthChanged`. Probes stop when the container exits or is removed and start
over, from "starting", when it starts again. On (re)start the handler picks up the containers
already running, continuing from the health their records show.
"""

from __future__ import annotations

import trio

from carte.api.containers import ContainerDetails, Health, HealthConfig, HealthLogEntry
from carte.api.errors import CarteError, Conflict, NotFound, Unavailable
from carte.api.events import (
    ContainerExited,
    ContainerRemoved,
    ContainerStarted,
    ExecInContainer,
    HealthChanged,
    InspectContainer,
    ListContainers,
    SetContainerHealth,
)
from carte.api.timestamps import now_rfc3339
from carte.engine import Handler, HandlerContext, on
from carte.handlers.lifecycle._health_probe import probe_command, watch_health

# Grace on top of a probe's own timeout before the daemon gives up waiting on the exec itself.
_EXEC_GRACE = 10.0
# A probe's output kept in its result, as Docker keeps it (the first 4 KiB).
_OUTPUT_KEPT = 4096


class HealthHandler(Handler):
    """Health checks of running containers: `HealthChanged` facts, health in inspect/ps."""

    name = "health"
    requires = ("containers",)
    section = "health"  # no options yet
    catch_up = False  # run() probes the containers already running

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self._nursery: trio.Nursery | None = None
        self._ready = trio.Event()
        self._checks: dict[str, trio.CancelScope] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe the containers already running, then those that start, until cancelled
        (cancelling stops every probe; containers are not touched)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for row in await self.ctx.bus.request(ListContainers()):
                if row.state == "running" and row.id not in self._checks:
                    await self._begin(row.id, adopted=True)
            self._ready.set()
            task_status.started()
            await trio.sleep_forever()

    @on(ContainerStarted)
    async def container_started(self, fact: ContainerStarted) -> None:
        await self._ready.wait()
        await self._begin(fact.id, adopted=False)

    @on(ContainerExited)
    @on(ContainerRemoved)
    async def container_ended(self, fact: ContainerExited | ContainerRemoved) -> None:
        await self._ready.wait()
        self._end(fact.id)

    async def _begin(self, container_id: str, *, adopted: bool) -> None:
        """Start probing a container (ending an earlier run's probes); nothing when it has no
        healthcheck or is gone already."""
        self._end(container_id)
        try:
            details = await self.ctx.bus.request(InspectContainer(ref=container_id))
        except NotFound:
            return
        check = details.config.healthcheck
        if check is None or probe_command(check.test) is None or self._nursery is None:
            return
        health = _settled_health(details) if adopted else None
        scope = trio.CancelScope()
        self._checks[container_id] = scope
        self._nursery.start_soon(self._check, details, check, health, scope)

    def _end(self, container_id: str) -> None:
        scope = self._checks.pop(container_id, None)
        if scope is not None:
            scope.cancel()

    async def _check(
        self,
        details: ContainerDetails,
        check: HealthConfig,
        health: Health | None,
        scope: trio.CancelScope,
    ) -> None:
        """The probe loop of one container run; ends when its scope is cancelled. A failure
        to store or publish is logged and ends this loop only."""
        container_id, name = details.id, details.name
        command = probe_command(check.test) or []
        timeout = check.timeout if check.timeout > 0 else 30.0

        async def probe() -> HealthLogEntry | None:
            start = now_rfc3339()
            request = ExecInContainer(ref=container_id, cmd=command, timeout=timeout)
            try:
                with trio.fail_after(timeout + _EXEC_GRACE):
                    result = await self.ctx.bus.request(request)
            except (Conflict, NotFound):
                return None  # paused, or exiting: the exit fact ends the loop
            except trio.TooSlowError:
                return _entry(start, -1, f"Health check exceeded timeout ({timeout:g}s)")
            except CarteError as error:
                return _entry(start, -1, error.message)
            if result.timed_out:
                return _entry(start, -1, f"Health check exceeded timeout ({timeout:g}s)")
            return _entry(start, result.exit_code, result.output)

        async def report(health: Health, changed: bool) -> None:
            try:
                await self.ctx.bus.request(SetContainerHealth(ref=container_id, health=health))
            except NotFound:
                scope.cancel()
                return
            except Unavailable:
                pass  # the containers handler cannot store it now; the fact still tells
            except CarteError as error:
                self.ctx.log.warning(
                    "cannot store the health of container %s: %s", container_id[:12], error.message
                )
            if changed:
                output = health.log[-1].output if health.log else ""
                await self.ctx.bus.publish(
                    HealthChanged(
                        id=container_id,
                        status=health.status,
                        failing_streak=health.failing_streak,
                        output=output,
                    )
                )
                self.ctx.log.info("container %s (%s) is %s", container_id[:12], name, health.status)

        with scope:
            try:
                await watch_health(check, probe, report, health=health)
            except CarteError as error:
                self.ctx.log.warning(
                    "health checks of container %s stopped: %s", container_id[:12], error.message
                )
        if self._checks.get(container_id) is scope:
            del self._checks[container_id]


def _entry(start: str, exit_code: int, output: str) -> HealthLogEntry:
    return HealthLogEntry(
        start=start, end=now_rfc3339(), exit_code=exit_code, output=output[:_OUTPUT_KEPT]
    )


def _settled_health(details: ContainerDetails) -> Health | None:
    """A re-adopted container's health to continue from, when it was settled already."""
    health = details.state.health
    if health is not None and health.status in ("healthy", "unhealthy"):
        return health
    return None
