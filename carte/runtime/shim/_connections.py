"""The clients of shim.sock: accepting, reading request lines (and passed fds), queued replies.

Every socket is non-blocking. Replies and events are queued per connection and flushed as the
socket takes them; an fd sent with a line (SCM_RIGHTS) is closed here once it is sent. A client
whose queue grows past MAX_BACKLOG (an attached client not reading) is disconnected.
"""

from __future__ import annotations

import _socket
import os

from carte.runtime.shim._loop import CLOSED, READABLE, WRITABLE, EventLoop
from carte.runtime.shim.protocol import (
    LineBuffer,
    ProtocolError,
    decode_line,
    encode_line,
    fd_space,
    fds_in,
    rights,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_BACKLOG = 1 << 18
MAX_FDS_PER_MESSAGE = 8
_READ_SIZE = 1 << 16


class Connection:
    """One client: its partial input, received fds not yet used, and queued output."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.lines = LineBuffer()
        self.out: list[tuple[bytes, list[int]]] = []
        self.backlog = 0
        self.fds: list[int] = []
        self.attached = False
        self.closing = False  # drop it once `out` is flushed

    def take_fds(self, count: int) -> list[int]:
        """The first `count` fds the client passed and no request used yet."""
        taken, self.fds = self.fds[:count], self.fds[count:]
        return taken


class Clients:
    """Serves the listening socket; hands each request line to `on_request`.

    `on_drop(connection)` is called when a connection goes away, so its owner can forget it.
    """

    def __init__(
        self,
        loop: EventLoop,
        listen_fd: int,
        on_request: Callable[[Connection, dict[str, Any]], None],
        on_drop: Callable[[Connection], None],
    ) -> None:
        self._loop = loop
        self._on_request = on_request
        self._on_drop = on_drop
        self.connections: dict[int, Connection] = {}
        self._listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, listen_fd)
        self._listener.setblocking(False)
        loop.watch(listen_fd, self._accept)

    def __len__(self) -> int:
        return len(self.connections)

    def reply(self, client: Connection, *, error: str = "", **fields: Any) -> None:
        """Queue `{"ok": true, **fields}`, or `{"ok": false, "error": error}`."""
        message = {"ok": False, "error": error} if error else {"ok": True, **fields}
        self.send(client, encode_line(message))

    def send(self, client: Connection, line: bytes, fds: list[int] | None = None) -> None:
        """Queue `line` (and `fds`, closed once sent) for `client`; a dropped client is skipped."""
        if client.fd not in self.connections:
            for fd in fds or []:
                os.close(fd)
            return
        client.out.append((line, fds or []))
        client.backlog += len(line)
        if client.backlog > MAX_BACKLOG:
            self.drop(client)
            return
        self._flush(client)

    def any_attached(self) -> bool:
        return any(client.attached for client in self.connections.values())

    def broadcast(self, line: bytes) -> None:
        """Send `line` to every attached client."""
        for client in list(self.connections.values()):
            if client.attached:
                self.send(client, line)

    def close_after_flush(self, client: Connection) -> None:
        client.closing = True
        self._flush(client)

    def flush_blocking(self, client: Connection) -> None:
        """Send what is queued for `client`, waiting for the socket (before the shim exits)."""
        if client.fd in self.connections:
            client.sock.setblocking(True)
            self._flush(client)

    def drop(self, client: Connection) -> None:
        """Close the connection and every fd it still holds."""
        if self.connections.pop(client.fd, None) is None:
            return
        self._loop.unwatch(client.fd)
        for _, fds in client.out:
            for fd in fds:
                os.close(fd)
        for fd in client.fds:
            os.close(fd)
        client.sock.close()
        self._on_drop(client)

    def drop_all(self) -> None:
        for client in list(self.connections.values()):
            self.drop(client)

    def _accept(self, events: int) -> None:
        while True:
            try:
                client_fd, _ = self._listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, client_fd)
            sock.setblocking(False)
            client = Connection(sock)
            self.connections[client.fd] = client
            self._loop.watch(client.fd, self._handler(client))

    def _handler(self, client: Connection) -> Callable[[int], None]:
        def on_events(events: int) -> None:
            if events & WRITABLE:
                self._flush(client)
            if events & (READABLE | CLOSED) and client.fd in self.connections:
                self._read(client)

        return on_events

    def _read(self, client: Connection) -> None:
        try:
            data, ancillary, _, _ = client.sock.recvmsg(
                _READ_SIZE, fd_space(MAX_FDS_PER_MESSAGE), _socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        client.fds.extend(fds_in(ancillary))
        if not data:
            self.drop(client)
            return
        try:
            for line in client.lines.feed(data):
                if line.strip() and client.fd in self.connections:
                    self._on_request(client, decode_line(line))
        except ProtocolError as error:
            self.reply(client, error=f"bad request: {error}")
            self.close_after_flush(client)

    def _flush(self, client: Connection) -> None:
        try:
            while client.out:
                line, fds = client.out[0]
                if fds:
                    sent = client.sock.sendmsg([line], rights(fds))
                    for fd in fds:
                        os.close(fd)
                else:
                    sent = client.sock.send(line)
                client.backlog -= sent
                if sent < len(line):
                    client.out[0] = (line[sent:], [])
                else:
                    client.out.pop(0)
        except BlockingIOError:
            self._loop.set_mask(client.fd, READABLE | WRITABLE)
            return
        except OSError:
            self.drop(client)
            return
        self._loop.set_mask(client.fd, READABLE)
        if client.closing:
            self.drop(client)
