"""Who asks: the ``x-carte-peer`` header the daemon's listeners hand to routes.

Routes trust that header, so every listener drops any such header a client sent before it
decides who the peer is: the unix socket names none (whoever may open it may use the whole
API), the cluster's TCP listener names the client certificate (`PeerGuard` in `_tls`), the
dashboard's loopback listener names the login session (`LoginGuard` in carte.handlers.ui).
"""

from __future__ import annotations

from typing import Any

PEER_HEADER = b"x-carte-peer"

Headers = list[tuple[bytes, bytes]]


class PeerHeaderGuard:
    """An ASGI wrapper that drops a client's own ``x-carte-peer`` header from each HTTP
    request and WebSocket, asks `admit` who the peer is and hands that on in the header
    (other ASGI scopes, such as lifespan, pass untouched). As is, it names no peer: the
    unix socket's guard."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = [(name, value) for name, value in scope["headers"] if name != PEER_HEADER]
        peer = await self.admit(scope, headers, send)
        if peer is None:
            return
        if peer:
            headers.append((PEER_HEADER, peer.encode()))
        await self.app(dict(scope, headers=headers), receive, send)

    async def admit(self, scope: Any, headers: Headers, send: Any) -> str | None:
        """The peer of the request ("" for none), or None when this guard refused it and
        has answered it already through `send`. `headers` are the request's own."""
        return ""
