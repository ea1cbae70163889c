"""Following a container's log until the container stops or exits: the polling loop that
`carte logs -f`, `carte run` (``until_exit``), Docker's logs route and Docker's attach share.

`watch_log` asks the bus a `WaitContainer` in a background task and hands back a `LogWatch`
whose `batches()` polls the json-file log every `POLL_INTERVAL` seconds until the answer comes;
the last batch holds what was written before the answer, so no line is lost at the end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Set
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from carte.api.containers import WaitResult
from carte.api.events import WaitContainer
from carte.engine import Bus
from carte.runtime.logs import LogEntry, LogFollower

POLL_INTERVAL = 0.05


class LogSelection(Protocol):
    """What a logs route asks for (Carte's `LogQuery`, Docker's query): the streams, the last
    `tail` entries, `since`/`until` in nanoseconds since the epoch, whether to follow."""

    @property
    def streams(self) -> Set[str]: ...
    @property
    def tail(self) -> int | None: ...
    @property
    def since(self) -> int | None: ...
    @property
    def until(self) -> int | None: ...
    @property
    def follow(self) -> bool: ...


class LogWatch:
    """The new entries of `follower` while the bus has not answered the wait."""

    def __init__(self, follower: LogFollower) -> None:
        self.follower = follower
        self.answered = trio.Event()
        self.result: WaitResult | None = None

    async def batches(self) -> AsyncIterator[list[LogEntry]]:
        """The entries written since the last poll, one list a poll (often empty), until the
        wait is answered. Nothing is held open between polls: leaving the loop early is safe."""
        while True:
            answered = self.answered.is_set()
            yield self.follower.poll()
            if answered:
                return
            with trio.move_on_after(POLL_INTERVAL):
                await self.answered.wait()


@asynccontextmanager
async def watch_log(
    bus: Bus, follower: LogFollower, wait: WaitContainer
) -> AsyncIterator[LogWatch]:
    """Ask `wait` in the background for as long as the block runs; a block left before the
    answer (a failed start, the client gone) cancels the wait. A failed wait (the container
    was removed) raises its `CarteError` out of the block."""
    watch = LogWatch(follower)

    async def wait_for_answer() -> None:
        watch.result = await bus.request(wait)
        watch.answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_answer)
        yield watch
        nursery.cancel_scope.cancel()


async def log_entries(
    bus: Bus, follower: LogFollower, container_id: str, selection: LogSelection
) -> AsyncGenerator[LogEntry, None]:
    """The entries a logs route sends: the backlog as selected, then with `follow` the new
    ones until the container stops (those before `until`). Consume it inside
    `contextlib.aclosing`: it holds the wait's nursery open between entries."""
    for entry in follower.backlog(
        tail=selection.tail, since=selection.since, until=selection.until
    ):
        if entry.stream in selection.streams:
            yield entry
    if not selection.follow:
        return
    async with watch_log(bus, follower, WaitContainer(ref=container_id)) as watch:
        async for batch in watch.batches():
            for entry in batch:
                if entry.stream in selection.streams and (
                    selection.until is None or entry.time_ns < selection.until
                ):
                    yield entry
