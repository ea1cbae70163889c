"""The containers handler's HTTP routes (`CONTAINER_ROUTES`): logs here, attach and exec
(`_interactive_routes`), cp (`_archive_routes`). Each runs with the handler's running
instance; while it is down the http handler answers 503 naming it.

`GET /v1/containers/<ref>/logs` as NDJSON, a stream that lives until the client leaves.

Query: `follow=1` keeps streaming until the container stops; `tail=N`, `since=`/`until=` (Unix
seconds, float), `stdout=0`/`stderr=0` to leave a stream out, `until_exit=1` (what
`carte run` uses): the first line is ``{"ready": true}`` once the log is open, output follows
until the container's next exit, and the last line is ``{"exit": WaitResult}``. With
`start=1` as well the route starts the container itself (one request less): the first line is
then ``{"ready": true}`` once it started, or ``{"error": {"code", "message"}}`` and the end.
Each log line is ``{"stream": "stdout"|"stderr", "log": TEXT, "time": RFC3339}``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING

import msgspec
from quart import Response, request

from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import InspectContainer, StartContainer, WaitContainer
from carte.engine import HandlerContext
from carte.engine.handler import Route
from carte.handlers.containers._archive_routes import COPY_ROUTES
from carte.handlers.containers._interactive_routes import INTERACTIVE_ROUTES
from carte.handlers.containers._log_watch import log_entries, watch_log
from carte.runtime.logs import LogEntry, LogFollower

if TYPE_CHECKING:
    from carte.handlers.containers._handler import ContainersHandler

NDJSON = "application/x-ndjson"
_encoder = msgspec.json.Encoder()


class LogQuery(msgspec.Struct, frozen=True, kw_only=True):
    follow: bool = False
    until_exit: bool = False
    start: bool = False
    tail: int | None = None
    since: int | None = None
    until: int | None = None
    streams: frozenset[str] = frozenset(("stdout", "stderr"))

    @classmethod
    def from_args(cls, args: dict[str, str]) -> LogQuery:
        """Parse the query string; `InvalidArgument` naming the bad value."""

        def number(name: str) -> float | None:
            value = args.get(name, "")
            if value in ("", "all"):
                return None
            try:
                return float(value)
            except ValueError:
                raise InvalidArgument(f'logs: "{name}={value}" is not a number') from None

        def flag(name: str, default: bool = False) -> bool:
            value = args.get(name)
            return default if value is None else value.lower() in ("1", "true", "yes")

        tail, since, until = number("tail"), number("since"), number("until")
        streams = {s for s in ("stdout", "stderr") if flag(s, True)}
        return cls(
            follow=flag("follow"),
            until_exit=flag("until_exit"),
            start=flag("start"),
            tail=None if tail is None else int(tail),
            since=None if since is None else int(since * 1e9),
            until=None if until is None else int(until * 1e9),
            streams=frozenset(streams),
        )


def _line(entry: LogEntry) -> bytes:
    return _encoder.encode({"stream": entry.stream, "log": entry.text, "time": entry.time}) + b"\n"


async def stream_logs(ctx: HandlerContext, ref: str, query: LogQuery) -> AsyncIterator[bytes]:
    """Yield the log lines, following as asked. Cancellation (client gone) stops the poll."""
    details = await ctx.bus.request(InspectContainer(ref=ref))
    follower = LogFollower(details.log_path)
    try:
        if query.until_exit:
            wait = WaitContainer(ref=details.id, condition="next-exit", since=time.time())
            async with watch_log(ctx.bus, follower, wait) as watch:
                if query.start:
                    try:
                        await ctx.bus.request(StartContainer(ref=details.id))
                    except CarteError as error:
                        failure = {"code": error.code, "message": error.message}
                        yield _encoder.encode({"error": failure}) + b"\n"
                        return
                yield _encoder.encode({"ready": True}) + b"\n"
                async for batch in watch.batches():
                    for entry in batch:
                        if entry.stream in query.streams:
                            yield _line(entry)
            yield _encoder.encode({"exit": watch.result}) + b"\n"
            return
        entries = log_entries(ctx.bus, follower, details.id, query)
        async with aclosing(entries):
            async for entry in entries:
                yield _line(entry)
    finally:
        follower.close()


async def container_logs(containers: ContainersHandler, ref: str) -> Response:
    """A container's log as NDJSON (carte logs [-f], carte run)."""
    ctx = containers.ctx
    query = LogQuery.from_args(dict(request.args))
    await ctx.bus.request(InspectContainer(ref=ref))  # 404 before the stream starts
    return Response(stream_logs(ctx, ref, query), content_type=NDJSON)


CONTAINER_ROUTES = (
    Route("GET", "/v1/containers/<ref>/logs", container_logs, streams=True),
    *INTERACTIVE_ROUTES,
    *COPY_ROUTES,
)
