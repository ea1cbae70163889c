"""The restart handler: applies restart policies when containers exit and when the daemon starts.

On `ContainerExited` it decides with `restart_wanted` (restart_policy.py) whether the container
comes back; if so it counts the restart, asks the containers handler to show the container as
"restarting" with its RestartCount (`SetContainerRestarting`), publishes `ContainerRestarting`,
waits out the backoff and starts it (`StartContainer`). A user's stop, start or rm during the
wait ends it. A restart that fails to start counts as another failed run.

Per container it keeps, under ``restart-policy/<id>`` in the store (its only writer), whether
the user stopped it last and how many automatic restarts it had since a user started it, so the
decision holds across daemon restarts. On its own start it starts every exited container whose
policy says so (Docker's restore: "always" ones come back even after a user stop).
"""

from __future__ import annotations

import os

import msgspec
import trio

from carte.api.containers import ContainerDetails
from carte.api.errors import CarteError, Conflict, NotFound, Unavailable
from carte.api.events import (
    ContainerExited,
    ContainerRemoved,
    ContainerRestarting,
    ContainerStarted,
    InspectContainer,
    ListContainers,
    SetContainerRestarting,
    StartContainer,
)
from carte.api.timestamps import parse_rfc3339
from carte.engine import Handler, HandlerContext, on
from carte.handlers.containers import ContainersOptions
from carte.handlers.lifecycle._restart_policy import RestartBackoff, restart_wanted

MEMOS = "restart-policy/"
DAEMON_PID = "restart-handler/daemon-pid"


class RestartMemo(msgspec.Struct, kw_only=True):
    """What the restart handler remembers of one container across daemon restarts."""

    stopped_by_user: bool = False
    restart_count: int = 0


class RestartHandler(Handler):
    """Restart policies: no, on-failure[:N], always, unless-stopped."""

    name = "restart"
    requires = ("containers",)
    Options = ContainersOptions  # the backoff is containers.restart in carte.yaml
    section = "containers"
    catch_up = False  # run() restores what exited while the daemon was down

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self._nursery: trio.Nursery | None = None
        self._ready = trio.Event()
        self._waits: dict[str, trio.CancelScope] = {}
        self._backoffs: dict[str, RestartBackoff] = {}
        self._own_starts: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the exited containers whose policy says so (side by side, without holding up
        the daemon's start), then serve until cancelled (cancelling drops pending restarts;
        the next daemon start makes them)."""
        daemon_start = await self._first_run_in_this_daemon()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for row in await self.ctx.bus.request(ListContainers(all=True)):
                if row.state in ("exited", "restarting"):
                    nursery.start_soon(self._restore, row.id, daemon_start)
            self._ready.set()
            task_status.started()
            await trio.sleep_forever()

    async def _first_run_in_this_daemon(self) -> bool:
        """False when this handler was restarted after a crash inside the same daemon process:
        then only exits it missed are restarted, not what a daemon start brings back."""
        pid = str(os.getpid()).encode()
        entry = await self.ctx.store.get(DAEMON_PID)
        if entry is not None and entry.value == pid:
            return False
        await self.ctx.store.put(DAEMON_PID, pid)
        return True

    async def _restore(self, container_id: str, daemon_start: bool) -> None:
        try:
            details = await self.ctx.bus.request(InspectContainer(ref=container_id))
        except NotFound:
            return
        memo = await self._memo(container_id)
        wanted = restart_wanted(
            details.config.restart,
            exit_code=details.state.exit_code,
            stopped_by_user=memo.stopped_by_user,
            restart_count=memo.restart_count,
            daemon_start=daemon_start,
        )
        if wanted and not details.config.auto_remove:
            self.ctx.log.info(
                "starting container %s (%s): its restart policy is %s",
                details.id[:12],
                details.name,
                details.config.restart.name,
            )
            if await self._start(details.id, waiting="exited"):
                await self._consider(details.id, details.state.exit_code or 125, memo)

    # --- facts ------------------------------------------------------------------------------

    @on(ContainerExited)
    async def container_exited(self, fact: ContainerExited) -> None:
        await self._ready.wait()
        memo = await self._memo(fact.id)
        if memo.stopped_by_user != fact.requested:
            memo.stopped_by_user = fact.requested
            await self._save(fact.id, memo)
        await self._consider(fact.id, fact.exit_code, memo)

    @on(ContainerStarted)
    async def container_started(self, fact: ContainerStarted) -> None:
        """A start the policy did not make is a user's: it resets the count and the backoff
        (Docker gives the container a fresh restart manager) and ends a pending wait."""
        await self._ready.wait()
        if fact.id in self._own_starts:
            self._own_starts.discard(fact.id)
            return
        self._cancel(fact.id)
        self._backoffs.pop(fact.id, None)
        if await self.ctx.store.get(MEMOS + fact.id) is not None:
            await self._save(fact.id, RestartMemo())

    @on(ContainerRemoved)
    async def container_removed(self, fact: ContainerRemoved) -> None:
        await self._ready.wait()
        self._cancel(fact.id)
        self._backoffs.pop(fact.id, None)
        await self.ctx.store.delete(MEMOS + fact.id)

    # --- deciding and waiting -------------------------------------------------------------------

    async def _consider(self, container_id: str, exit_code: int, memo: RestartMemo) -> None:
        """Schedule a restart of an exited container if its policy wants one."""
        if container_id in self._waits:
            return
        try:
            details = await self.ctx.bus.request(InspectContainer(ref=container_id))
        except NotFound:
            return
        wanted = restart_wanted(
            details.config.restart,
            exit_code=exit_code,
            stopped_by_user=memo.stopped_by_user,
            restart_count=memo.restart_count,
        )
        if not wanted or details.config.auto_remove:
            return
        state = details.state
        ran_for = max(0.0, parse_rfc3339(state.finished_at) - parse_rfc3339(state.started_at))
        backoff = self._backoffs.setdefault(container_id, RestartBackoff())
        delay = backoff.next_delay(self.ctx.options.restart, ran_for)
        await self._schedule(details, memo, delay=delay)

    async def _schedule(
        self, details: ContainerDetails, memo: RestartMemo, *, delay: float
    ) -> None:
        """Count the restart, show the container "restarting" and start it after `delay` s."""
        count = memo.restart_count + 1
        try:
            await self.ctx.bus.request(SetContainerRestarting(ref=details.id, restart_count=count))
            marked = True
        except Unavailable:
            marked = False  # the containers handler cannot show it; restart all the same
        except (Conflict, NotFound):
            return  # started or removed meanwhile
        memo.restart_count = count
        await self._save(details.id, memo)
        await self.ctx.bus.publish(
            ContainerRestarting(id=details.id, name=details.name, restart_count=count, delay=delay)
        )
        if self._nursery is None:
            return
        scope = trio.CancelScope()
        self._waits[details.id] = scope
        self._nursery.start_soon(self._restart_after, details.id, delay, marked, scope)

    async def _restart_after(
        self, container_id: str, delay: float, marked: bool, scope: trio.CancelScope
    ) -> None:
        """Wait `delay` s, then start the container if it still waits for it. Cancelled by a
        user's start or rm. A failed start is considered like a failed run."""
        failed = False
        with scope:
            await trio.sleep(delay)
            failed = await self._start(container_id, "restarting" if marked else "exited")
        if self._waits.get(container_id) is scope:
            del self._waits[container_id]
        if failed:
            try:
                details = await self.ctx.bus.request(InspectContainer(ref=container_id))
            except NotFound:
                return
            memo = await self._memo(container_id)
            await self._consider(container_id, details.state.exit_code or 125, memo)

    async def _start(self, container_id: str, waiting: str) -> bool:
        """Start the container if its status is still `waiting`; True when the start failed."""
        try:
            details = await self.ctx.bus.request(InspectContainer(ref=container_id))
        except NotFound:
            return False
        if details.state.status != waiting:
            if waiting == "restarting" and details.state.status == "exited":
                memo = await self._memo(container_id)  # a user stopped it during the wait
                memo.stopped_by_user = True
                await self._save(container_id, memo)
            return False
        self._own_starts.add(container_id)
        try:
            await self.ctx.bus.request(StartContainer(ref=container_id))
        except CarteError as error:
            self._own_starts.discard(container_id)
            self.ctx.log.warning(
                "restart of container %s failed: %s", container_id[:12], error.message
            )
            return True
        return False

    def _cancel(self, container_id: str) -> None:
        scope = self._waits.pop(container_id, None)
        if scope is not None:
            scope.cancel()

    # --- memos ------------------------------------------------------------------------------

    async def _memo(self, container_id: str) -> RestartMemo:
        entry = await self.ctx.store.get(MEMOS + container_id)
        return RestartMemo() if entry is None else entry.decode(RestartMemo)

    async def _save(self, container_id: str, memo: RestartMemo) -> None:
        await self.ctx.store.put(MEMOS + container_id, memo)
