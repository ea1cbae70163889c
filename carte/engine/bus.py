"""The event bus: commands with one owner and a typed reply; facts fanned out to subscribers.

Facts: `Bus.publish` appends the fact to the journal, then sends it to every matching
subscriber through that subscriber's own bounded memory channel (never ``clone()``, which
shares one queue). Publishing is serialized, so every subscriber sees facts in the same order
as the journal.

Backpressure: a subscriber whose channel is full makes ``publish`` wait until it catches up,
and every other publisher waits behind it. That keeps memory bounded and loses nothing, at
the price that one stuck subscriber stalls publishing. So a subscriber must keep draining its
channel, and a fact method must not publish facts that it itself receives faster than its
buffer (``bus.subscriber_buffer``) can absorb.

Commands: `Bus.request` calls the owning handler's method in the caller's task, so the
caller's cancellation cancels the command. A command whose owner is starting (the supervisor
marked it with `starting`) waits for it, at most ``start_wait`` seconds, then fails with a
clear `Unavailable`; an owner that is down (crashed and waiting to restart, skipped,
disabled) fails fast with `Unavailable` instead of hanging.
The bus itself owns `Ping` (owner "engine") and answers "pong": a round trip with no handler.

Routes: the supervisor declares every installed handler's HTTP `Route`s here (disabled ones
too, so they can answer 503); the http handler reads them with `routes()` and gets the
owning handler's running instance, under the same waiting rule, with `serving(owner)`.
Readiness: the supervisor calls `mark_ready()` once every handler had its first start, and
`wait_ready()` returns from then on (the http handler opens its socket only then).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import trio

from carte.api.errors import CarteError, Internal, Unavailable
from carte.api.events import Command, Fact, Ping, event_name
from carte.engine.handler import Route
from carte.engine.journal import Journal
from carte.engine.log import describe_error, traceback_text

ResultT = TypeVar("ResultT")

CommandCall = Callable[[Any], Awaitable[Any]]


@dataclass
class _Subscriber:
    types: tuple[type[Fact], ...]
    send: trio.MemorySendChannel[Fact]
    name: str = ""


@dataclass
class _Route:
    owner: str
    call: CommandCall | None = None


@dataclass
class _Owner:
    """What the bus knows of one handler: its serving instance, or why it does not serve."""

    handler: object | None = None
    down: str = "has not started yet"
    starting: bool = False
    settled: trio.Event = field(default_factory=trio.Event)
    """Set when a start attempt ends: the handler serves, or went down."""


class Bus:
    """Routes commands to their owners and fans facts out. Lives in one trio run."""

    def __init__(
        self,
        *,
        journal_size: int = 10_000,
        subscriber_buffer: int = 256,
        start_wait: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.journal = Journal(journal_size)
        self.subscriber_buffer = subscriber_buffer
        self.start_wait = start_wait
        self._log = log or logging.getLogger("carte.engine.bus")
        self._subscribers: list[_Subscriber] = []
        self._publish_lock = trio.Lock()
        self._routes: dict[type[Command[Any]], _Route] = {Ping: _Route("engine", self._pong)}
        self._owners: dict[str, _Owner] = {"engine": _Owner(handler=self)}
        self._http_routes: list[tuple[str, Route]] = []
        self._ready = trio.Event()

    # --- facts ----------------------------------------------------------------------------

    async def publish(self, fact: Fact) -> None:
        """Journal ``fact`` and deliver it to every subscriber of its type, in order.

        Waits while a matching subscriber's channel is full (see the module docstring).
        Cancelling a waiting publish may leave the fact delivered to some subscribers only;
        it is always in the journal.
        """
        async with self._publish_lock:
            self.journal.append(fact)
            for subscriber in list(self._subscribers):
                if not isinstance(fact, subscriber.types):
                    continue
                try:
                    await subscriber.send.send(fact)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._drop(subscriber)  # it unsubscribed while we waited

    @asynccontextmanager
    async def subscribe(
        self, *types: type[Fact], buffer: int | None = None, name: str = ""
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Fact]]:
        """Receive every fact published from now on whose type is one of ``types`` (all if none).

        Yields this subscriber's own receive channel holding up to ``buffer`` facts
        (``bus.subscriber_buffer`` by default). Unsubscribes when the block exits, also on
        cancellation or error. Raises TypeError for a type that is not a Fact class.
        ``name`` labels its queue in `queue_depths` (the supervisor gives the handler's).

        Entering the block does not checkpoint, so reading ``bus.journal.since(...)`` first
        thing inside it gives the backlog with no gap and no overlap with the channel.
        """
        for fact_type in types:
            if not (isinstance(fact_type, type) and issubclass(fact_type, Fact)):
                raise TypeError(f"subscribe() takes Fact classes, got {fact_type!r}")
        size = self.subscriber_buffer if buffer is None else buffer
        send, receive = trio.open_memory_channel[Fact](size)
        subscriber = _Subscriber(types or (Fact,), send, name)
        self._subscribers.append(subscriber)
        try:
            yield receive
        finally:
            self._drop(subscriber)
            receive.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def queue_depths(self) -> list[tuple[str, int, int]]:
        """(name, facts waiting, capacity) of every subscriber's channel, in subscription
        order; an unnamed subscriber (an event stream) is "stream"."""
        depths = []
        for subscriber in self._subscribers:
            statistics = subscriber.send.statistics()
            capacity = statistics.max_buffer_size
            depths.append(
                (
                    subscriber.name or "stream",
                    statistics.current_buffer_used,
                    int(capacity) if capacity != float("inf") else -1,
                )
            )
        return depths

    def _drop(self, subscriber: _Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        subscriber.send.close()

    # --- commands -------------------------------------------------------------------------

    def declare_owner(self, command_type: type[Command[Any]], owner: str) -> None:
        """Record that handler ``owner`` answers ``command_type`` (it starts out down).

        Raises Internal naming both handlers when another handler already owns it.
        """
        route = self._routes.get(command_type)
        if route is not None and route.owner != owner:
            raise Internal(
                f'command "{event_name(command_type)}" is owned by both handler '
                f'"{route.owner}" and handler "{owner}"; disable one of them in carte.yaml '
                "(handlers.disabled)"
            )
        if route is None:
            self._routes[command_type] = _Route(owner)
        self._owners.setdefault(owner, _Owner())

    def declare_routes(self, owner: str, routes: Sequence[Route]) -> None:
        """Record the HTTP routes handler ``owner`` serves (see `Route`)."""
        self._owners.setdefault(owner, _Owner())
        self._http_routes.extend((owner, route) for route in routes)

    def routes(self) -> list[tuple[str, Route]]:
        """Every declared HTTP route with the name of the handler that serves it."""
        return list(self._http_routes)

    def starting(self, owner: str) -> None:
        """Mark ``owner`` as starting: its commands and routes wait for it (``start_wait``)."""
        state = self._owners.setdefault(owner, _Owner())
        if not state.starting:
            state.starting = True
            state.settled = trio.Event()

    def attach(
        self,
        owner: str,
        calls: Mapping[type[Command[Any]], CommandCall],
        handler: object | None = None,
    ) -> None:
        """Route each command in ``calls`` to its method, and ``owner``'s HTTP routes to
        ``handler`` (its running instance); called when ``owner`` is serving."""
        for command_type, call in calls.items():
            self.declare_owner(command_type, owner)
            self._routes[command_type].call = call
        state = self._owners.setdefault(owner, _Owner())
        state.handler = handler
        self._settle(state)

    def detach(self, owner: str, why: str) -> None:
        """Mark every command and route of ``owner`` down; requests fail fast saying ``why``."""
        for route in self._routes.values():
            if route.owner == owner:
                route.call = None
        state = self._owners.setdefault(owner, _Owner())
        state.handler = None
        state.down = why
        self._settle(state)

    @staticmethod
    def _settle(state: _Owner) -> None:
        state.starting = False
        state.settled.set()

    def mark_ready(self) -> None:
        """Every handler had its first start (served, was skipped or failed once)."""
        self._ready.set()

    async def wait_ready(self) -> None:
        """Return once `mark_ready` was called (at once from then on)."""
        await self._ready.wait()

    async def _wait_while_starting(self, owner: str) -> _Owner | None:
        """``owner``'s state once it is not starting any more, or None after ``start_wait``."""
        state = self._owners.get(owner)
        if state is None or not state.starting:
            return state
        with trio.move_on_after(self.start_wait):
            await state.settled.wait()
        state = self._owners.get(owner)
        if state is not None and state.starting:
            return None
        return state

    async def serving(self, owner: str) -> object:
        """The running instance of handler ``owner``, waiting while it starts (``start_wait``).

        Raises `Unavailable` naming the handler and why (disabled, skipped, crashed, still
        starting after ``start_wait``).
        """
        state = await self._wait_while_starting(owner)
        if state is None:
            raise Unavailable(self._still_starting(owner))
        if state.handler is None:
            raise Unavailable(f'handler "{owner}" {state.down}')
        return state.handler

    def _still_starting(self, owner: str) -> str:
        return (
            f'handler "{owner}" is still starting after {self.start_wait:g}s; '
            "see carte info and the daemon log"
        )

    async def _pong(self, command: Ping) -> str:
        return "pong"

    def owner_of(self, command_type: type[Command[Any]]) -> str | None:
        route = self._routes.get(command_type)
        return route.owner if route else None

    async def request(self, command: Command[ResultT]) -> ResultT:
        """Run ``command`` on its owning handler and return the typed result.

        Raises the `CarteError` the handler raised; `Unavailable` when no handler owns the
        command or its owner is down; `Internal` (the cause logged) when the handler failed
        with any other exception. Cancellation propagates to the handler's method.
        """
        name = event_name(command)
        route = self._routes.get(type(command))
        if route is None:
            raise Unavailable(
                f'no handler answers command "{name}"; install or enable the handler that '
                "provides it (carte info lists handlers)"
            )
        call = route.call
        if call is None:
            state = await self._wait_while_starting(route.owner)
            if state is None:
                raise Unavailable(
                    f'command "{name}" is unavailable: {self._still_starting(route.owner)}'
                )
            call = route.call
            if call is None:
                raise Unavailable(
                    f'command "{name}" is unavailable: handler "{route.owner}" {state.down}'
                )
        try:
            return cast(ResultT, await call(command))
        except CarteError:
            raise
        except ExceptionGroup as group:
            only = _single_carte_error(group)
            if only is None:
                raise self._internal(route.owner, name, group) from group
            raise only from group
        except Exception as error:
            raise self._internal(route.owner, name, error) from error

    def _internal(self, owner: str, name: str, error: Exception) -> Internal:
        """Log an unexpected command failure and return the Internal error the caller gets."""
        self._log.error(
            "command failed",
            extra={
                "command": name,
                "handler": owner,
                "error": describe_error(error),
                "traceback": traceback_text(error),
            },
        )
        return Internal(
            f'handler "{owner}" failed on command "{name}" ({describe_error(error)}); '
            "see the daemon log"
        )


def _single_carte_error(group: BaseExceptionGroup[Exception]) -> CarteError | None:
    """The one CarteError in a group (a handler's nursery wraps errors), else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    if len(leaves) == 1 and isinstance(leaves[0], CarteError):
        return leaves[0]
    return None
