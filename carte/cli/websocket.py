"""A minimal WebSocket client (RFC 6455) over the daemon's unix socket or its TCP address
(mutual TLS), standard library only.

Enough for Carte's interactive streams: one connection, unfragmented frames sent, fragmented
ones reassembled, pings answered, close handled. Reading is incremental (`receive_available`
after `select` says the socket is readable) so one `select` loop can also watch the terminal.
"""

from __future__ import annotations

import base64
import os
import socket

from carte.cli.transport import Client, DaemonUnreachable, api_error

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_CONTINUATION = 0x0


class WebSocket:
    """A connected WebSocket; `fileno()` is the socket's, for `select`."""

    def __init__(self, sock: socket.socket, pending: bytes = b"") -> None:
        self._sock = sock
        self._buffer = bytearray(pending)
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self.closed = False

    @classmethod
    def connect(cls, client: Client | str, path: str) -> WebSocket:
        """Open `path` on the daemon `client` talks to (its unix socket, or a TCP address over
        mutual TLS; a string is a unix socket's path) as a WebSocket.

        Raises DaemonUnreachable when nothing answers and ApiError when the daemon refuses the
        upgrade (its error body, one line).
        """
        sock = (Client(client) if isinstance(client, str) else client).connect()
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: carte\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                raise DaemonUnreachable("carte: the daemon closed the connection without answering")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 else 0
        if status != 101:
            body = rest + _read_rest(sock)
            sock.close()
            raise api_error(status, body)
        return cls(sock, rest)

    def fileno(self) -> int:
        return self._sock.fileno()

    def send_binary(self, data: bytes) -> None:
        self._send(BINARY, data)

    def send_text(self, text: str) -> None:
        self._send(TEXT, text.encode())

    def close(self) -> None:
        """Say goodbye (best effort) and close the socket."""
        if not self.closed:
            try:
                self._send(CLOSE, (1000).to_bytes(2, "big"))
            except OSError:
                pass
            self.closed = True
        self._sock.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        header = bytearray((0x80 | opcode,))
        if length < 126:
            header.append(0x80 | length)
        elif length < 1 << 16:
            header.append(0x80 | 126)
            header += length.to_bytes(2, "big")
        else:
            header.append(0x80 | 127)
            header += length.to_bytes(8, "big")
        mask = os.urandom(4)
        self._sock.sendall(bytes(header) + mask + _masked(payload, mask))

    def receive_available(self) -> list[tuple[int, bytes]]:
        """Read what the socket has (one recv) and return the complete messages in it as
        (TEXT|BINARY, payload). At the end of the connection `closed` becomes True."""
        try:
            chunk = self._sock.recv(1 << 16)
            # TLS: a record decrypted beyond what recv returned no longer shows to `select`
            while chunk and (pending := getattr(self._sock, "pending", _none)()):
                chunk += self._sock.recv(pending)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return []
        self._buffer += chunk
        messages = []
        while (frame := self._next_frame()) is not None:
            fin, opcode, payload = frame
            if opcode == PING:
                self._send(PONG, payload)
            elif opcode == CLOSE:
                self.closed = True
                break
            elif opcode == _CONTINUATION or not fin:
                if opcode != _CONTINUATION:
                    self._fragment_opcode = opcode
                self._fragments.append(payload)
                if fin:
                    messages.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif opcode in (TEXT, BINARY):
                messages.append((opcode, payload))
        return messages

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        data = self._buffer
        if len(data) < 2:
            return None
        fin = bool(data[0] & 0x80)
        opcode = data[0] & 0x0F
        masked = bool(data[1] & 0x80)
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            if len(data) < 4:
                return None
            length = int.from_bytes(data[2:4], "big")
            offset = 4
        elif length == 127:
            if len(data) < 10:
                return None
            length = int.from_bytes(data[2:10], "big")
            offset = 10
        mask = b""
        if masked:
            mask = bytes(data[offset : offset + 4])
            offset += 4
        if len(data) < offset + length:
            return None
        payload = bytes(data[offset : offset + length])
        del data[: offset + length]
        return fin, opcode, _masked(payload, mask) if masked else payload


def _none() -> int:
    return 0


def _masked(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeated 4-byte mask, as one big-integer operation (fast in Python)."""
    if not payload:
        return payload
    length = len(payload)
    repeated = (mask * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(length, "big")


def _read_rest(sock: socket.socket) -> bytes:
    sock.settimeout(2.0)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except OSError:
        pass
    return data
