"""Docker's exec routes and resizes (the hijacked ``/exec/ID/start`` is served by the front,
`_hijack`): each exec instance is an `ExecRecord` run on Carte's own exec stream."""

from __future__ import annotations

from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from carte.api.containers import ExecOptions
from carte.api.errors import Conflict, InvalidArgument
from carte.api.events import InspectContainer
from carte.engine import HandlerContext
from carte.handlers.docker._interactive import ExecRecord, Sessions
from carte.handlers.docker._shapes import reply


def _size(args: Any) -> tuple[int, int]:
    try:
        return int(args.get("h") or 0), int(args.get("w") or 0)
    except ValueError:
        raise InvalidArgument("resize needs h=ROWS and w=COLUMNS as numbers") from None


def exec_options(body: Any) -> tuple[ExecOptions, bool, bool]:
    """Docker's exec create body as Carte's `ExecOptions` and the stdout/stderr flags."""
    if not isinstance(body, dict):
        raise InvalidArgument("the exec create body is not a JSON object")
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
        raise InvalidArgument("exec needs Cmd, a list of strings")
    if body.get("Privileged"):
        raise InvalidArgument("Carte does not support privileged exec (Privileged: true)")
    if body.get("DetachKeys"):
        raise InvalidArgument("Carte does not support exec DetachKeys")
    options = ExecOptions(
        cmd=list(cmd),
        tty=bool(body.get("Tty")),
        stdin=bool(body.get("AttachStdin")),
        user=body.get("User") or "",
        workdir=body.get("WorkingDir") or "",
        env=[str(e) for e in body.get("Env") or []],
    )
    return options, bool(body.get("AttachStdout")), bool(body.get("AttachStderr"))


def add_exec_routes(app: QuartTrio, ctx: HandlerContext, sessions: Sessions) -> None:
    bus = ctx.bus

    @app.post("/containers/<ref>/exec")
    async def create_exec(ref: str) -> Response:
        options, stdout, stderr = exec_options(await request.get_json(force=True, silent=True))
        details = await bus.request(InspectContainer(ref=ref))
        if not details.state.running:
            raise Conflict(f"Container {details.id} is not running")
        if details.state.paused:
            raise Conflict(f"Container {details.id} is paused, unpause the container before exec")
        record = ExecRecord(details.id, options, stdout, stderr)
        sessions.execs[record.id] = record
        return reply({"Id": record.id}, 201)

    @app.get("/exec/<exec_id>/json")
    async def inspect_exec(exec_id: str) -> Response:
        return reply(sessions.exec_record(exec_id).shape())

    @app.post("/exec/<exec_id>/start")
    async def start_exec(exec_id: str) -> Response:
        record = sessions.exec_record(exec_id)
        body = await request.get_json(force=True, silent=True) or {}
        if not body.get("Detach"):
            raise InvalidArgument(
                "exec start without Detach is served only as a hijacked connection (Upgrade: tcp)"
            )
        await sessions.detach_exec(record)
        return Response("", status=200)

    @app.post("/exec/<exec_id>/resize")
    async def resize_exec(exec_id: str) -> Response:
        sessions.exec_record(exec_id)
        await sessions.resize(exec_id, *_size(request.args))
        return Response("", status=200)

    @app.post("/containers/<ref>/resize")
    async def resize_container(ref: str) -> Response:
        details = await bus.request(InspectContainer(ref=ref))
        if not details.state.running:
            raise Conflict(f"Container {details.id} is not running")
        await sessions.resize(details.id, *_size(request.args))
        return Response("", status=200)
