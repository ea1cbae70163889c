"""The Docker socket's front: attach and exec start answered on the raw connection, the rest
passed on.

Docker's attach and exec start are hijacked connections: the client sends ``Upgrade: tcp``,
the server answers ``101 UPGRADED`` and the connection then carries the output (framed as in
logs when there is no TTY) and, when asked for, the client's stdin. hypercorn cannot hand a
connection over like that, so the public socket is served here: a request head naming
``/containers/ID/attach`` or ``/exec/ID/start`` with the upgrade is answered on the spot, any
other connection is piped byte for byte to the quart-trio app on a private socket.
Attach without stdin follows the container's log until it exits; attach with stdin and exec
go through Carte's own interactive streams (`_interactive`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs

import msgspec
import trio

from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import InspectContainer, WaitContainer
from carte.engine import HandlerContext
from carte.handlers.containers import watch_log
from carte.handlers.docker._interactive import STDERR, STDOUT, Sessions, frame, upgraded
from carte.handlers.http import connect_relaying
from carte.runtime.logs import LogEntry, LogFollower

_HEAD_LIMIT = 64 << 10
_ATTACH = re.compile(r"^POST (?:/v\d+\.\d+)?/containers/([^/?]+)/attach(?:\?(\S*))? HTTP/1\.[01]$")
_EXEC_START = re.compile(r"^POST (?:/v\d+\.\d+)?/exec/([^/?]+)/start(?:\?\S*)? HTTP/1\.[01]$")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}
_encoder = msgspec.json.Encoder()


async def serve_front(
    ctx: HandlerContext,
    sessions: Sessions,
    public: Path,
    inner: Path,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on `public` (mode 0660) until cancelled; each connection is served in its own
    task of this function's nursery and ends with it. The socket file is removed on the way
    out."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    _unlink(str(public))
    await sock.bind(str(public))
    os.chmod(str(public), 0o660)
    sock.listen(128)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:

        async def handle(stream: trio.abc.Stream) -> None:
            try:
                await _serve_connection(ctx, sessions, cast(trio.SocketStream, stream), inner)
            except* (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                OSError,
                CarteError,
            ) as ended:
                # one client leaving (or the app's socket restarting) ends its connection only
                ctx.log.debug("docker api connection ended", extra={"error": repr(ended)})

        await trio.serve_listeners(handle, [listener])
    finally:
        _unlink(str(public))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def _serve_connection(
    ctx: HandlerContext, sessions: Sessions, client: trio.SocketStream, inner: Path
) -> None:
    async with client:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
            chunk = await client.receive_some(_HEAD_LIMIT)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        hijacked = b"upgrade:" in head.lower()
        if hijacked and (matched := _ATTACH.match(request_line)):
            query = parse_qs(matched.group(2) or "")
            await _answer(client, _attach(ctx, sessions, client, matched.group(1), query, head))
            return
        if hijacked and (matched := _EXEC_START.match(request_line)):
            await _answer(client, _exec_start(sessions, client, matched.group(1), head))
            return
        upstream = await connect_relaying(inner, client.socket)  # the caller, for the audit
        async with upstream:
            await upstream.send_all(head)
            async with trio.open_nursery() as nursery:

                async def to_upstream() -> None:
                    while chunk := await client.receive_some(1 << 16):
                        await upstream.send_all(chunk)
                    await upstream.send_eof()

                nursery.start_soon(to_upstream)
                while chunk := await upstream.receive_some(1 << 16):
                    await client.send_all(chunk)
                nursery.cancel_scope.cancel()


async def _refuse(client: trio.SocketStream, status: int, reason: str, message: str) -> None:
    body = _encoder.encode({"message": message})
    await client.send_all(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


async def _answer(client: trio.SocketStream, serving: Awaitable[None]) -> None:
    """Run a hijacked answer; a refusal before the upgrade is Docker's error reply."""
    try:
        await serving
    except CarteError as error:
        await _refuse(client, error.status, "Error", error.message)


def _body_and_rest(head: bytes) -> tuple[bytes, bytes, int]:
    """The request body received so far, the bytes after it, and how many are still due."""
    _, _, after = head.partition(b"\r\n\r\n")
    found = _CONTENT_LENGTH.search(head.partition(b"\r\n\r\n")[0])
    length = int(found.group(1)) if found else 0
    return after[:length], after[length:], max(length - len(after), 0)


async def _exec_start(
    sessions: Sessions, client: trio.SocketStream, exec_id: str, head: bytes
) -> None:
    body, early, due = _body_and_rest(head)
    while due > 0:
        chunk = await client.receive_some(due)
        if not chunk:
            return
        body, due = body + chunk, due - len(chunk)
    try:
        options = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError:
        raise InvalidArgument("exec start: the body is not JSON") from None
    record = sessions.exec_record(exec_id)
    if isinstance(options, dict) and options.get("Detach"):
        await sessions.detach_exec(record)
        await client.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    await sessions.run_exec(client, record, early)


async def _attach(
    ctx: HandlerContext,
    sessions: Sessions,
    client: trio.SocketStream,
    ref: str,
    query: dict[str, list[str]],
    head: bytes,
) -> None:
    def on(name: str) -> bool:
        return query.get(name, ["0"])[-1].lower() in ("1", "true")

    details = await ctx.bus.request(InspectContainer(ref=ref))
    wanted = {name for name in ("stdout", "stderr") if on(name)}
    if on("stdin"):
        _, early, _ = _body_and_rest(head)
        await sessions.attach(client, details, {_STREAM_IDS[w] for w in wanted}, early)
        return
    since = time.time()
    framed = not details.config.tty
    await client.send_all(upgraded(framed=framed))
    follower = LogFollower(details.log_path)
    try:
        earlier = follower.backlog()
        if on("logs"):
            await _send(client, earlier, wanted, framed)
        wait = WaitContainer(ref=details.id, condition="next-exit", since=since)
        async with watch_log(ctx.bus, follower, wait) as watch:
            async for batch in watch.batches():
                await _send(client, batch, wanted, framed)
    finally:
        follower.close()


async def _send(
    client: trio.SocketStream, entries: list[LogEntry], wanted: set[str], framed: bool
) -> None:
    for entry in entries:
        if entry.stream not in wanted:
            continue
        data = entry.text.encode()
        await client.send_all(frame(_STREAM_IDS.get(entry.stream, 1), data) if framed else data)
