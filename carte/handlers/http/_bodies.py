"""Request bodies read at the pace of the route that consumes them.

Quart's connection reads a request body from hypercorn as fast as it arrives and buffers it
all in the request's `Body` until the route takes it, so a 600 MB upload that a route writes to
disk grew the daemon by 500 MB. Here, once a route iterates the body (``async for chunk in
request.body``, what every upload route does), the connection stops asking hypercorn for more
while `HIGH_WATER` bytes wait unread; hypercorn then stops reading the socket and the client's
writes block (TCP/unix-socket backpressure). Bodies awaited whole (``get_data``) are never
paced, so a command body is read to its end (its size is capped in front, `_limits`).
"""

from __future__ import annotations

from typing import Any

import trio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

HIGH_WATER = 16 << 20


class PacedBody(TrioBody):
    """`TrioBody` that tells its connection when it holds enough unread bytes."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._streaming = False
        self._room = trio.Event()
        self._room.set()

    def append(self, data: bytes) -> None:
        super().append(data)
        if self._streaming and len(self._data) >= HIGH_WATER and self._room.is_set():
            self._room = trio.Event()

    def set_complete(self) -> None:
        super().set_complete()
        self._room.set()

    async def __anext__(self) -> bytes:
        self._streaming = True
        try:
            return await super().__anext__()
        finally:
            self._room.set()

    async def wait_for_room(self) -> None:
        """Return once the route took what was buffered (at once when not streaming)."""
        await self._room.wait()


class PacedRequest(TrioRequest):
    body_class = PacedBody


class PacedConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, asking for the next piece of body only when there is room."""

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Any, receive: Any
    ) -> None:
        body = request.body
        while True:
            if isinstance(body, PacedBody):
                await body.wait_for_room()
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()
