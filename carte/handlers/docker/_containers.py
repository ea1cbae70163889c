"""Docker's container routes, each one Carte command on the bus (logs read the container's
json-file log the way Carte's own logs route does).

Logs of a container without a TTY use Docker's multiplexed framing: each chunk is preceded by
8 bytes, the stream (1 stdout, 2 stderr), three zero bytes and the length (big-endian u32).
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from carte.api.containers import ContainerDetails
from carte.api.errors import InvalidArgument, NotFound
from carte.api.events import (
    CreateContainer,
    InspectContainer,
    InspectImage,
    KillContainer,
    ListContainers,
    PauseContainer,
    RemoveContainer,
    RenameContainer,
    ResolveContainer,
    RestartContainer,
    StartContainer,
    StopContainer,
    UnpauseContainer,
    UpdateContainer,
    WaitContainer,
)
from carte.engine import Bus, HandlerContext
from carte.handlers.containers import log_entries
from carte.handlers.docker._create import container_config, container_update
from carte.handlers.docker._interactive import Sessions
from carte.handlers.docker._shapes import (
    JSON,
    container_inspect,
    container_summary,
    filters,
    flag,
    reply,
)
from carte.runtime.logs import LogEntry, LogFollower

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"
_STREAM_IDS = {"stdout": 1, "stderr": 2}
_encoder = msgspec.json.Encoder()


def no_content() -> Response:
    return Response("", status=204)


def _timeout(args: Any) -> int | None:
    value = args.get("t") or args.get("timeout")
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f"t={value!r} is not a number of seconds") from None


def bytes_used(top: str) -> int:
    """The disk space of the files under `top`, as du counts it (0 for "" or a tree gone)."""
    total = 0
    for directory, _, names in os.walk(top) if top else ():
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


async def sizes(bus: Bus, details: ContainerDetails) -> dict[str, int]:
    """``SizeRw`` (its writable layer; 0 once it is gone) and ``SizeRootFs`` (that and its
    image) of a container, as ``size=1`` asks."""
    try:
        location = await bus.request(ResolveContainer(ref=details.id))
        image = await bus.request(InspectImage(ref=details.image_id))
    except NotFound:
        return {"SizeRw": 0, "SizeRootFs": 0}
    written = await trio.to_thread.run_sync(bytes_used, location.upper_dir)
    return {"SizeRw": written, "SizeRootFs": written + image.size}


async def container_rows(
    bus: Bus, listing: ListContainers, *, with_sizes: bool = False
) -> list[dict[str, Any]]:
    """``GET /containers/json`` rows of what `listing` finds, with their `sizes` if asked."""
    shaped = []
    for row in await bus.request(listing):
        try:
            details = await bus.request(InspectContainer(ref=row.id))
        except NotFound:
            continue  # removed since it was listed
        shaped.append(container_summary(row, details))
        if with_sizes:
            shaped[-1].update(await sizes(bus, details))
    return shaped


def add_container_routes(app: QuartTrio, ctx: HandlerContext, sessions: Sessions) -> None:
    bus = ctx.bus

    @app.post("/containers/create")
    async def create() -> Response:
        body = await request.get_json(force=True, silent=True)
        if body is None:
            raise InvalidArgument("the create body is not JSON")
        if request.args.get("platform"):
            raise InvalidArgument("Carte does not support choosing a platform (platform=)")
        config = container_config(body, request.args.get("name", ""))
        result = await bus.request(CreateContainer(config=config))
        return reply({"Id": result.id, "Warnings": result.warnings}, 201)

    @app.get("/containers/json")
    async def list_containers() -> Response:
        args = request.args
        wanted = filters(args)
        listing = ListContainers(all=flag(args, "all"), filters=wanted)
        shaped = await container_rows(bus, listing, with_sizes=flag(args, "size"))
        limit = int(args.get("limit") or -1)
        return reply(shaped[:limit] if limit > 0 else shaped)

    @app.get("/containers/<ref>/json")
    async def inspect(ref: str) -> Response:
        details = await bus.request(InspectContainer(ref=ref))
        shaped = container_inspect(details)
        if flag(request.args, "size"):
            shaped.update(await sizes(bus, details))
        return reply(shaped)

    @app.post("/containers/<ref>/start")
    async def start(ref: str) -> Response:
        details = await bus.request(InspectContainer(ref=ref))
        if details.state.running:
            return Response("", status=304)
        await bus.request(StartContainer(ref=ref))
        return no_content()

    @app.post("/containers/<ref>/stop")
    async def stop(ref: str) -> Response:
        details = await bus.request(InspectContainer(ref=ref))
        if not details.state.running and not details.state.paused:
            return Response("", status=304)
        await bus.request(StopContainer(ref=ref, timeout=_timeout(request.args)))
        return no_content()

    @app.post("/containers/<ref>/restart")
    async def restart(ref: str) -> Response:
        await bus.request(RestartContainer(ref=ref, timeout=_timeout(request.args)))
        return no_content()

    @app.post("/containers/<ref>/kill")
    async def kill(ref: str) -> Response:
        signal = request.args.get("signal") or "KILL"
        await bus.request(KillContainer(ref=ref, signal=signal))
        return no_content()

    @app.post("/containers/<ref>/pause")
    async def pause(ref: str) -> Response:
        await bus.request(PauseContainer(ref=ref))
        return no_content()

    @app.post("/containers/<ref>/unpause")
    async def unpause(ref: str) -> Response:
        await bus.request(UnpauseContainer(ref=ref))
        return no_content()

    @app.post("/containers/<ref>/rename")
    async def rename(ref: str) -> Response:
        name = request.args.get("name") or ""
        if not name:
            raise InvalidArgument("rename needs name=NEW_NAME")
        await bus.request(RenameContainer(ref=ref, name=name))
        return no_content()

    @app.delete("/containers/<ref>")
    async def remove(ref: str) -> Response:
        args = request.args
        if flag(args, "link"):
            raise InvalidArgument("Carte does not support links (link=1)")
        await bus.request(
            RemoveContainer(ref=ref, force=flag(args, "force"), volumes=flag(args, "v"))
        )
        return no_content()

    @app.post("/containers/<ref>/update")
    async def update(ref: str) -> Response:
        limits, restart = container_update(await request.get_json(force=True, silent=True))
        await bus.request(UpdateContainer(ref=ref, resources=limits, restart=restart))
        return reply({"Warnings": []})

    @app.post("/containers/<ref>/wait")
    async def wait(ref: str) -> Response:
        condition = request.args.get("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"wait condition={condition!r} is not one Docker knows")
        details = await bus.request(InspectContainer(ref=ref))
        carte_condition = "not-running" if condition == "not-running" else "next-exit"
        # an interactive attach may have started the container before this request came
        since = sessions.attached_at.pop(details.id, time.time())
        waiting = WaitContainer(ref=details.id, condition=carte_condition, since=since)

        async def outcome() -> AsyncIterator[bytes]:
            # `docker run` starts the container only once these headers arrived
            result = await bus.request(waiting)
            error = {"Message": result.error} if result.error else None
            yield _encoder.encode({"StatusCode": result.status_code, "Error": error})

        return Response(outcome(), content_type=JSON)

    @app.post("/containers/<ref>/attach")
    async def attach(ref: str) -> Response:
        # the front (`_hijack`) answers attach requests that ask for the upgrade
        await bus.request(InspectContainer(ref=ref))
        message = "attach is served only as a hijacked connection (Upgrade: tcp)"
        return reply({"message": message}, 400)

    @app.get("/containers/<ref>/logs")
    async def logs(ref: str) -> Response:
        args = request.args
        streams = {name for name in ("stdout", "stderr") if flag(args, name)}
        if not streams:
            raise InvalidArgument("logs: choose at least one of stdout=1 and stderr=1")
        details = await bus.request(InspectContainer(ref=ref))
        query = _LogQuery(
            streams=streams,
            follow=flag(args, "follow"),
            timestamps=flag(args, "timestamps"),
            tail=_tail(args.get("tail")),
            since=_nanoseconds(args.get("since"), "since"),
            until=_nanoseconds(args.get("until"), "until"),
        )
        tty = details.config.tty
        return Response(
            _log_chunks(ctx, details, query, framed=not tty),
            content_type=RAW if tty else MULTIPLEXED,
        )


class _LogQuery(msgspec.Struct, frozen=True, kw_only=True):
    streams: set[str]
    follow: bool
    timestamps: bool
    tail: int | None
    since: int | None
    until: int | None


def _tail(value: str | None) -> int | None:
    if value in (None, "", "all"):
        return None
    try:
        return max(int(value), 0)
    except ValueError:
        raise InvalidArgument(f'logs: tail={value!r} is not a number or "all"') from None


def _nanoseconds(value: str | None, name: str) -> int | None:
    if value in (None, "", "0"):
        return None
    try:
        return int(float(value) * 1e9)
    except ValueError:
        raise InvalidArgument(f"logs: {name}={value!r} is not Unix seconds") from None


def _chunk(entry: LogEntry, query: _LogQuery, framed: bool) -> bytes:
    text = entry.text.encode()
    if query.timestamps:
        text = entry.time.encode() + b" " + text
    if not framed:
        return text
    return struct.pack(">BxxxL", _STREAM_IDS.get(entry.stream, 1), len(text)) + text


async def _log_chunks(
    ctx: HandlerContext, details: ContainerDetails, query: _LogQuery, *, framed: bool
) -> AsyncIterator[bytes]:
    """The log as Docker sends it; with follow, until the container stops. Cancellation
    (the client left) ends the poll and closes the log file."""
    follower = LogFollower(details.log_path)
    try:
        entries = log_entries(ctx.bus, follower, details.id, query)
        async with contextlib.aclosing(entries):
            async for entry in entries:
                yield _chunk(entry, query, framed)
    finally:
        follower.close()
