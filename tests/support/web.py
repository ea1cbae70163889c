"""One HTTP request from the host to a service a test runs (a replica, a VIP)."""

from __future__ import annotations

import socket

__all__ = ["http_get"]


def http_get(address: str, port: int = 80, *, timeout: float = 3.0, source_port: int = 0) -> str:
    """One ``GET /`` (HTTP/1.0) on a fresh connection, so each request is a new flow; the body,
    stripped. Raises `OSError` when the connection fails or the status is not 200 (loops that
    count failed requests catch that)."""
    with socket.create_connection(
        (address, port), timeout=timeout, source_address=("", source_port)
    ) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    status = head.partition("\r\n")[0]
    if " 200 " not in status:
        raise OSError(f"status line {status!r}")
    return body.strip()
