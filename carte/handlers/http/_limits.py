"""Request body limits, per route, in front of the web framework (an ASGI wrapper).

Quart would buffer a body up to one app-wide limit; here each request gets its route's cap
before the framework sees a byte: routes declared ``upload`` (their handler streams the body
to disk) get ``max_upload_body``, every other route ``max_command_body``. A declared
Content-Length over the cap is answered 413 at once without reading the body; a body that
grows past it while arriving stops the route (as a client that left would) and is answered
413 when nothing was sent yet. Either way the connection is then closed, so the rest of a
huge body is never read into memory.

It also shields the last piece of every answer from cancellation: quart-trio cancels a
request's tasks when hypercorn reports the stream closed, which hypercorn does from inside
that very send, so the connection close that ``Connection: close`` asks for (and the
keep-alive timer of the next request) was cancelled half-way and the client waited forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import trio
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from carte.api.system import ErrorBody, ErrorDetail

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_encoder = msgspec.json.Encoder()


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


class BodyLimits:
    """The ASGI application hypercorn serves: `app` behind per-route body caps."""

    def __init__(
        self,
        app: QuartTrio,
        *,
        command_limit: int,
        upload_limit: int,
        upload_endpoints: set[str],
    ) -> None:
        self.app = app
        self.command_limit = command_limit
        self.upload_limit = upload_limit
        self.upload_endpoints = upload_endpoints

    def _limit(self, scope: Scope) -> tuple[int, str]:
        try:
            endpoint, _ = self.app.url_map.bind("carte").match(
                scope["path"], method=scope["method"]
            )
        except HTTPException:
            endpoint = ""  # the framework answers 404/405 itself
        except Exception:
            endpoint = ""
        if endpoint in self.upload_endpoints:
            return self.upload_limit, "uploads (handlers.options.api.max_upload_body)"
        return self.command_limit, "this route (handlers.options.api.max_command_body)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[arg-type]
            return
        limit, which = self._limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, scope, limit, which)
            return
        received = 0
        exceeded = False
        answered = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True  # the route stops as if the client had left
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):  # hypercorn's sends are bounded
                    await send(message)
                return
            await send(message)

        await self.app(scope, counted_receive, tracked_send)  # type: ignore[arg-type]
        if exceeded and not answered:
            await _refuse(send, scope, limit, which)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, scope: Scope, limit: int, which: str) -> None:
    message = (
        f"request body of {scope['method']} {scope['path']} is larger than the "
        f"{_size(limit)} allowed for {which}"
    )
    body = _encoder.encode(ErrorBody(error=ErrorDetail(code="too_large", message=message)))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
