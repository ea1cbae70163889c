"""Carte's own API on its own socket, as the Docker routes reach the streaming parts of it.

Streams that Carte serves only as HTTP routes of its handlers (cp archives, save, load,
export, and the attach/exec WebSockets) are not reimplemented here: the Docker routes call
them on the daemon's socket (``daemon.socket``) and translate the answer. h11 and wsproto are
sans-I/O parsers (hypercorn's own) run on a trio unix stream.

`request` answers an `ApiResponse` whose body is read as it arrives; a 4xx/5xx is raised as
the `CarteError` Carte's body names, so the Docker app shows its message and status. Leaving
the context (or cancellation) closes the connection. `open_stream` answers a `CarteStream`
(one WebSocket); a refused upgrade is raised the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from carte.api.errors import ERRORS_BY_CODE, CarteError, Internal, Unavailable

_CHUNK = 1 << 16
_HOST = "carte"


def carte_error(status: int, body: bytes) -> CarteError:
    """The error Carte's ``{"error": {"code", "message"}}`` body describes."""
    try:
        detail = json.loads(body)["error"]
        cls = ERRORS_BY_CODE.get(detail["code"], Internal)
        return cls(str(detail["message"]))
    except (ValueError, KeyError, TypeError):
        text = body.decode(errors="replace").strip() or f"HTTP {status}"
        return Unavailable(f"Carte's API answered {status}: {text[:200]}")


class ApiResponse:
    def __init__(self, status: int, headers: dict[str, str], events: AsyncIterator[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._events = events

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self._events])


async def _connect(socket: Path) -> trio.SocketStream:
    try:
        return await trio.open_unix_socket(str(socket))
    except OSError as error:
        raise Unavailable(
            f"Carte's API socket {socket} does not answer ({error.strerror}); the http handler "
            "must run for this Docker route"
        ) from None


class CarteApi:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    @asynccontextmanager
    async def request(
        self, method: str, target: str, body: bytes | AsyncIterable[bytes] | None = None
    ) -> AsyncIterator[ApiResponse]:
        stream = await _connect(self.socket)
        async with stream:
            connection = h11.Connection(h11.CLIENT)
            headers = [("Host", _HOST)]
            if isinstance(body, bytes):
                headers.append(("Content-Length", str(len(body))))
            elif body is not None:
                headers.append(("Transfer-Encoding", "chunked"))
            else:
                headers.append(("Content-Length", "0"))
            await stream.send_all(
                connection.send(h11.Request(method=method, target=target, headers=headers)) or b""
            )
            if isinstance(body, bytes):
                await stream.send_all(connection.send(h11.Data(data=body)) or b"")
            elif body is not None:
                async for chunk in body:
                    if chunk:
                        await stream.send_all(connection.send(h11.Data(data=chunk)) or b"")
            await stream.send_all(connection.send(h11.EndOfMessage()) or b"")
            head = await _next_event(connection, stream)
            if not isinstance(head, h11.Response):
                raise Unavailable(f"Carte's API closed the connection on {method} {target}")
            response = ApiResponse(
                head.status_code,
                {k.decode().lower(): v.decode("latin-1") for k, v in head.headers},
                _body(connection, stream),
            )
            if head.status_code >= 400:
                raise carte_error(head.status_code, await response.read())
            yield response

    @asynccontextmanager
    async def open_stream(self, target: str) -> AsyncIterator[CarteStream]:
        stream = await _connect(self.socket)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(Request(host=_HOST, target=target)))
            rejected = b""
            while True:
                data = await stream.receive_some(_CHUNK)
                if not data:
                    raise Unavailable(f"Carte's API closed the stream {target} before accepting")
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        yield CarteStream(ws, stream)
                        return
                    if isinstance(event, RejectData):
                        rejected += event.data
                        if event.body_finished:
                            raise carte_error(400, rejected)
                    elif isinstance(event, RejectConnection) and not event.has_body:
                        raise carte_error(event.status_code, b"")


async def _next_event(connection: h11.Connection, stream: trio.SocketStream) -> h11.Event:
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(_CHUNK))
            continue
        return event  # type: ignore[return-value]


async def _body(connection: h11.Connection, stream: trio.SocketStream) -> AsyncIterator[bytes]:
    while True:
        event = await _next_event(connection, stream)
        if isinstance(event, h11.Data):
            yield bytes(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return
        else:
            raise Unavailable(f"Carte's API sent {type(event).__name__} in a body")


class CarteStream:
    """One of Carte's interactive WebSockets: binary frames are a stream id byte and data,
    text frames JSON control messages (docs/architecture.md, "Interactive streams")."""

    def __init__(self, ws: WSConnection, stream: trio.abc.Stream) -> None:
        self._ws = ws
        self._stream = stream
        self._pending: list[bytes | str] = []
        self._partial: list[bytes | str] = []
        self._send_lock = trio.Lock()
        self._closed = False

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self._stream.send_all(self._ws.send(BytesMessage(data=data)))

    async def send_control(self, message: dict[str, object]) -> None:
        async with self._send_lock:
            await self._stream.send_all(self._ws.send(TextMessage(data=json.dumps(message))))

    async def receive(self) -> bytes | dict[str, object] | None:
        """The next whole message (None once the daemon closed the stream and every message
        that came before the close was taken)."""
        while not self._pending:
            if self._closed:
                return None
            data = await self._stream.receive_some(_CHUNK)
            if not data:
                return None
            self._ws.receive_data(bytes(data))
            for event in self._ws.events():
                if isinstance(event, Message):
                    self._partial.append(event.data)
                    if event.message_finished:
                        parts, self._partial = self._partial, []
                        if isinstance(event, BytesMessage):
                            self._pending.append(b"".join(p for p in parts if isinstance(p, bytes)))
                        else:
                            self._pending.append("".join(p for p in parts if isinstance(p, str)))
                elif isinstance(event, Ping):
                    async with self._send_lock:
                        await self._stream.send_all(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._closed = True  # messages in the same read still count
        message = self._pending.pop(0)
        if isinstance(message, bytes):
            return message
        try:
            parsed = json.loads(message)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
