"""The supervisor: runs every planned handler, restarts the ones that crash, keeps the rest up.

For each handler, in plan order, the supervisor asks ``check()`` (a reason skips it, and
anything requiring it), subscribes its ``@on(Fact)`` methods to their own bus channel, starts
``run()`` with ``nursery.start`` and only then routes its commands to it. A handler "crashes"
when ``run()``, a fact method or its construction raises: the supervisor logs one line,
publishes `HandlerCrashed`, marks its commands down (requests fail fast with `Unavailable`),
waits with exponential backoff and starts a fresh instance. Other handlers keep serving.

``check()`` runs once, before the first start; if it raises, that counts as a crash and it
runs again before the next start. A handler whose ``run()`` never reports started holds up
the start of the handlers after it (and the daemon's readiness): report started promptly.

Commands and HTTP routes of a handler that is starting (first start, or a restart attempt
after its backoff) wait for it on the bus (``bus.start_wait``); while it waits out a backoff,
is skipped or disabled they fail fast. Once every handler had its first start the supervisor
calls ``bus.mark_ready()``.

On its first start a handler first receives, from the journal, the facts of its types that
were published since the supervisor was made and before it subscribed (a plugin that starts
last still sees the ``ContainerExited`` the containers handler published while re-adopting),
unless it sets ``catch_up = False``. A restarted handler misses the facts published while it
was down; it should rebuild what it needs from the store (the source of truth) when it starts.
`announce` publishes a fact and waits until every running subscriber handled it: the daemon
sends ``DaemonStopping`` that way before it cancels the handlers. Cancellation (daemon shutdown)
stops every handler and is never swallowed.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace
from typing import Any

import trio

from carte.api.events import Command, Fact, HandlerCrashed, HandlerSkipped, HandlerStarted
from carte.engine.config import BackoffConfig, Config, handler_options
from carte.engine.handler import Handler, HandlerContext
from carte.engine.log import describe_error, traceback_text
from carte.engine.roster import Plan

CommandCalls = dict[type[Command[Any]], Any]


class HandlerState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    SKIPPED = "skipped"
    RESTARTING = "restarting"
    DISABLED = "disabled"


@dataclass
class HandlerStatus:
    """What ``/v1/info`` shows for one handler."""

    name: str
    state: HandlerState
    reason: str = ""
    """Why it is skipped, disabled, or the last crash."""
    restarts: int = 0
    requires: tuple[str, ...] = ()


class Supervisor:
    """Runs the handlers of a `Plan` under one nursery; see the module docstring."""

    def __init__(
        self,
        plan: Plan,
        ctx: HandlerContext,
        *,
        backoff: BackoffConfig | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self._plan = plan
        self._base_ctx = ctx
        self._bus = ctx.bus
        self._backoff = backoff or ctx.config.supervisor.backoff
        self._log = log or logging.getLogger("carte.engine.supervisor")
        self._contexts: dict[str, HandlerContext] = {}
        self._status: dict[str, HandlerStatus] = {}
        self._since_start = ctx.bus.journal.mark()
        self._announced: tuple[Fact, set[str], trio.Event] | None = None
        for name in plan.disabled:
            self._status[name] = HandlerStatus(
                name, HandlerState.DISABLED, "disabled in carte.yaml (handlers)"
            )
        for off in plan.disabled_handlers:
            self._bus.declare_routes(off.name, off.routes)
            self._bus.detach(
                off.name,
                "is disabled in carte.yaml (handlers.disabled); enable it and restart the daemon",
            )
        for handler in plan.handlers:
            self._status[handler.name] = HandlerStatus(
                handler.name, HandlerState.STARTING, requires=handler.requires
            )
            for command_type in handler.commands:
                self._bus.declare_owner(command_type, handler.name)
            self._bus.declare_routes(handler.name, handler.routes)
            self._bus.starting(handler.name)

    def statuses(self) -> list[HandlerStatus]:
        """Every handler (planned first, in start order, then disabled ones), as a copy."""
        return [replace(status) for status in self._status.values()]

    def status(self, name: str) -> HandlerStatus | None:
        status = self._status.get(name)
        return replace(status) if status else None

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from now on: new backoff, and every handler's ``ctx.config``/options."""
        self._backoff = config.supervisor.backoff
        self._base_ctx.config = config
        for handler in self._plan.handlers:
            ctx = self._contexts.get(handler.name)
            if ctx is not None:
                ctx.config = config
                ctx.options = handler_options(config, handler.options_spec())

    async def announce(self, fact: Fact) -> None:
        """Publish ``fact`` and wait until every running handler subscribed to its type has
        handled it. Callers bound the wait (``trio.move_on_after``): a handler that crashes
        or hangs meanwhile is never done. Cancellation leaves the fact published."""
        waiting = {
            handler.name
            for handler in self._plan.handlers
            if self._status[handler.name].state is HandlerState.RUNNING
            and any(isinstance(fact, fact_type) for fact_type in handler.facts)
        }
        done = trio.Event()
        self._announced = (fact, waiting, done)
        if not waiting:
            done.set()
        await self._bus.publish(fact)
        await done.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every handler in plan order, then report started; runs until cancelled.

        Each handler is started only after the previous one started, was skipped, or failed
        its first start (it then keeps retrying in the background). Never raises for a
        handler's failure; cancellation stops all handlers.
        """
        async with trio.open_nursery() as nursery:
            for handler in self._plan.handlers:
                blocker = self._skipped_requirement(handler)
                if blocker is not None:
                    await self._skip(handler.name, blocker)
                    continue
                first_outcome = trio.Event()
                nursery.start_soon(self._supervise, handler, first_outcome, name=handler.name)
                await first_outcome.wait()
            self._bus.mark_ready()
            task_status.started()

    def _skipped_requirement(self, handler: type[Handler]) -> str | None:
        for required in handler.requires:
            status = self._status[required]
            if status.state is HandlerState.SKIPPED:
                return f'requires "{required}", which was skipped: {status.reason}'
        return None

    async def _skip(self, name: str, reason: str) -> None:
        self._status[name].state = HandlerState.SKIPPED
        self._status[name].reason = reason
        self._bus.detach(name, f"was skipped: {reason}")
        self._log.warning("handler skipped", extra={"handler": name, "reason": reason})
        await self._bus.publish(HandlerSkipped(id=name, reason=reason))

    async def _supervise(self, handler_type: type[Handler], first_outcome: trio.Event) -> None:
        name = handler_type.name
        ctx = self._contexts.get(name) or self._base_ctx.for_handler(handler_type)
        self._contexts[name] = ctx
        status = self._status[name]
        delay = self._backoff.initial
        checked = False
        while True:
            self._bus.starting(name)
            started_at = trio.current_time()
            failure: BaseException | None = None
            try:
                handler = handler_type(ctx)
                if not checked:
                    reason = await handler.check()
                    checked = True
                    if reason:
                        await self._skip(name, reason)
                        first_outcome.set()
                        return
                await self._serve(handler, status, first_outcome)
            except* Exception as group:
                failure = group
            if failure is None:
                continue  # not reached: _serve only returns by raising
            if trio.current_time() - started_at >= self._backoff.reset:
                delay = self._backoff.initial
            error = describe_error(failure)
            status.state = HandlerState.RESTARTING
            status.reason = error
            status.restarts += 1
            self._bus.detach(name, f"crashed ({error}) and restarts in {delay:g}s; retry then")
            self._log.error(
                "handler crashed",
                extra={
                    "handler": name,
                    "restart_in": delay,
                    "restarts": status.restarts,
                    "error": error,
                    "traceback": traceback_text(failure),
                },
            )
            first_outcome.set()
            await self._bus.publish(HandlerCrashed(id=name, error=error, restart_in=delay))
            await trio.sleep(delay)
            delay = min(delay * self._backoff.factor, self._backoff.max)

    async def _serve(
        self, handler: Handler, status: HandlerStatus, first_outcome: trio.Event
    ) -> None:
        """One life of ``handler``: subscribe, run, route commands, wait; ends only by raising."""
        async with trio.open_nursery() as nursery:
            if handler.facts:
                catch_up = handler.catch_up and status.restarts == 0
                await nursery.start(self._dispatch_facts, handler, catch_up)
            await nursery.start(handler.run)
            self._bus.attach(
                handler.name,
                {command: getattr(handler, method) for command, method in handler.commands.items()},
                handler=handler,
            )
            status.state = HandlerState.RUNNING
            status.reason = ""
            self._log.info(
                "handler started", extra={"handler": handler.name, "restarts": status.restarts}
            )
            first_outcome.set()
            await self._bus.publish(HandlerStarted(id=handler.name))
            await trio.sleep_forever()

    async def _dispatch_facts(
        self,
        handler: Handler,
        catch_up: bool,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Feed ``handler``'s fact methods from its own channel, in publication order; with
        ``catch_up``, the journal's facts since the supervisor started come first."""
        async with self._bus.subscribe(*handler.facts, name=handler.name) as facts:
            # subscribing did not checkpoint: the backlog ends where the channel begins
            backlog = self._bus.journal.after(self._since_start, tuple(handler.facts))
            task_status.started()
            for fact in backlog if catch_up else ():
                await self._deliver(handler, fact)
            async for fact in facts:
                await self._deliver(handler, fact)

    async def _deliver(self, handler: Handler, fact: Fact) -> None:
        for fact_type, methods in handler.facts.items():
            if isinstance(fact, fact_type):
                for method in methods:
                    await getattr(handler, method)(fact)
        if self._announced is not None and self._announced[0] is fact:
            _, waiting, done = self._announced
            waiting.discard(handler.name)
            if not waiting:
                done.set()
