"""WebSocket routes for interactive containers: attach (and `run -i/-t`) and exec.

Framing (docs/architecture.md, "Interactive streams"): a binary frame is one byte of stream id
(0 stdin, 1 stdout, 2 stderr) followed by data; a text frame is one JSON control message with a
"type": from the client "resize" {rows, cols} and "close_stdin"; from the daemon "started",
"exit" {exit_code[, oom_killed]} and "error" {code, status, message}, each followed by the
daemon closing the socket (after "exit" and "error").

- ``/v1/containers/<ref>/attach?stdin=1&start=1&rows=R&cols=C``: attach to the container's
  own stdio; with start=1 (what `carte run -i/-t` uses after CreateContainer) the container is
  started once attached, so no output is missed.
- ``/v1/containers/<ref>/exec``: the client's first frame is an `ExecOptions` text message.

A client that goes away ends its session only: the container or process keeps running.
Both run with the containers handler's running instance (`INTERACTIVE_ROUTES`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from quart import websocket

from carte.api.containers import ContainerLocation, ExecOptions
from carte.api.errors import CarteError, Conflict, Internal, InvalidArgument
from carte.api.events import InspectContainer, ParkContainer, ResolveContainer, StartContainer
from carte.engine import HandlerContext
from carte.engine.handler import Route
from carte.handlers.containers._attach import AttachedContainer
from carte.handlers.containers._exec import (
    STDIN,
    ProcessIO,
    exec_process,
    start_detached,
    start_exec,
)
from carte.handlers.containers._spec import resolve_user
from carte.runtime.shim.client import ShimError

if TYPE_CHECKING:
    from carte.handlers.containers._handler import ContainersHandler

_exec_options = msgspec.json.Decoder(ExecOptions)


async def attach_container(containers: ContainersHandler, ref: str) -> None:
    """Attach to a container's stdio (WebSocket; start=1 starts it once attached)."""
    await websocket.accept()
    try:
        await _attach(containers.ctx, ref, dict(websocket.args))
    except CarteError as error:
        await _send_error(error)


async def exec_in_container(containers: ContainersHandler, ref: str) -> None:
    """Run a process in a running container (WebSocket; first frame: ExecOptions)."""
    await websocket.accept()
    try:
        await _exec(containers.ctx, ref)
    except CarteError as error:
        await _send_error(error)


INTERACTIVE_ROUTES = (
    Route("WEBSOCKET", "/v1/containers/<ref>/attach", attach_container),
    Route("WEBSOCKET", "/v1/containers/<ref>/exec", exec_in_container),
)


async def _attach(ctx: HandlerContext, ref: str, args: dict[str, str]) -> None:
    location = await ctx.bus.request(ResolveContainer(ref=ref))
    start = args.get("start") == "1"
    if not start and location.status != "running":
        raise Conflict(
            f'cannot attach to container "{location.name}": it is {location.status}; '
            f"start it first (carte start -a {location.name})"
        )
    if start and location.status == "exited":
        await ctx.bus.request(ParkContainer(ref=location.id))  # attached before it starts
    io = await _open_attach(location)
    try:
        rows, cols = _size(args.get("rows"), args.get("cols"))
        if location.tty and rows and cols:
            await io.resize(rows, cols)
        if start:
            await ctx.bus.request(StartContainer(ref=location.id))
        await _send_control({"type": "started"})
        await _serve(io, stdin=args.get("stdin") == "1")
    finally:
        with trio.CancelScope(shield=True):
            await io.aclose()


async def _open_attach(location: ContainerLocation) -> AttachedContainer:
    try:
        return await AttachedContainer.open(Path(location.state_dir), location.id)
    except ShimError as error:
        raise Internal(f'cannot attach to container "{location.name}": {error.message}') from None
    except CarteError:
        raise Conflict(
            f'cannot attach to container "{location.name}": it is not running; '
            f"start it first (carte start -a {location.name})"
        ) from None


async def _exec(ctx: HandlerContext, ref: str) -> None:
    first = await websocket.receive()
    try:
        options = _exec_options.decode(first)
    except msgspec.ValidationError as error:
        raise InvalidArgument(f"exec options: {error}") from None
    except msgspec.DecodeError:
        raise InvalidArgument("exec: the first message must be the options as JSON") from None
    if not options.cmd:
        raise InvalidArgument("exec needs a command; e.g. carte exec NAME ls")
    location = await ctx.bus.request(ResolveContainer(ref=ref))
    if location.status != "running" or not location.shim_socket:
        raise Conflict(
            f'cannot exec in container "{location.name}": it is not running '
            f"({location.status}); start it first (carte start {location.name})"
        )
    process = await _exec_process(ctx, location, options)
    try:
        if options.detach:
            pid = await start_detached(location.shim_socket, process)
            await _send_control({"type": "started", "pid": pid})
            await _send_control({"type": "exit", "exit_code": 0})
            return
        io = await start_exec(location.shim_socket, process, tty=options.tty, stdin=options.stdin)
    except ShimError as error:
        raise Conflict(f'exec in container "{location.name}": {error.message}') from None
    try:
        if options.tty and options.rows and options.cols:
            await io.resize(options.rows, options.cols)
        await _send_control({"type": "started"})
        await _serve(io, stdin=options.stdin)
    finally:
        with trio.CancelScope(shield=True):
            await io.aclose()


async def _exec_process(
    ctx: HandlerContext, location: ContainerLocation, options: ExecOptions
) -> dict[str, Any]:
    """The OCI process for `options`: the container's env plus -e (TERM=xterm with -t, as
    Docker), -u resolved from the image's passwd/group files, -w as given."""
    details = await ctx.bus.request(InspectContainer(ref=location.id))
    env = [*details.config.env, *options.env]
    if options.tty and not any(item.startswith("TERM=") for item in env):
        env.append("TERM=xterm")
    user = None
    if options.user:
        layers = [Path(location.upper_dir), *(Path(p) for p in location.lower_dirs)]
        resolved = await trio.to_thread.run_sync(
            resolve_user, options.user, layers, list(details.config.group_add)
        )
        user = {
            "uid": resolved.uid,
            "gid": resolved.gid,
            "additionalGids": list(resolved.additional_gids),
        }
    return exec_process(
        cmd=list(options.cmd), env=env, workdir=options.workdir, user=user, tty=options.tty
    )


async def _serve(io: ProcessIO, *, stdin: bool) -> None:
    """Copy input and output until the process's output ended, then send its exit."""

    async def deliver(stream: int, data: bytes) -> None:
        await websocket.send(bytes((stream,)) + data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_copy_input, io, stdin)
        await io.copy_output(deliver)
        record = await io.wait()
        nursery.cancel_scope.cancel()
    exit_message = {"type": "exit", "exit_code": int(record.get("exit_code", 255))}
    if record.get("oom_killed"):
        exit_message["oom_killed"] = True
    await _send_control(exit_message)


async def _copy_input(io: ProcessIO, stdin: bool) -> None:
    """Client frames to the process until the client stops sending; runs until cancelled."""
    while True:
        message = await websocket.receive()
        if isinstance(message, bytes):
            if stdin and message[:1] == bytes((STDIN,)):
                await io.write_stdin(message[1:])
            continue
        try:
            control = json.loads(message)
        except ValueError:
            continue  # not ours to fail the session for; the protocol has no such frame
        kind = control.get("type") if isinstance(control, dict) else None
        if kind == "resize":
            rows, cols = _size(control.get("rows"), control.get("cols"))
            if rows and cols:
                await io.resize(rows, cols)
        elif kind == "close_stdin" and stdin:
            await io.close_stdin()


def _size(rows: object, cols: object) -> tuple[int, int]:
    try:
        return max(0, int(str(rows))), max(0, int(str(cols)))
    except ValueError:
        return 0, 0


async def _send_control(message: dict[str, Any]) -> None:
    await websocket.send(json.dumps(message))


async def _send_error(error: CarteError) -> None:
    await _send_control(
        {"type": "error", "code": error.code, "status": error.status, "message": error.message}
    )
