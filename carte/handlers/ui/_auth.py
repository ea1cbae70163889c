"""Who may see the dashboard: the login token, sessions, CSRF tokens and the loopback guard.

Three ways in, one check per way:

* the loopback listener (``handlers.options.ui.listen``): a browser posts the token from
  ``ROOT/ui-token`` (written at each start, 0600) to ``/ui/login`` and gets a session cookie
  (HttpOnly, SameSite=Strict, path /ui); `LoginGuard` refuses every other request without a
  live session (a page is redirected to the login form, anything else gets 401, a WebSocket
  is closed before it opens) and hands the session on as ``x-carte-peer: ui-session/ID``;
* the cluster's TCP listener: the http handler's `PeerGuard` lets only client certificates of
  the cluster CA through (an admin's; a node's reaches only /v1/cluster/*);
* the API's unix socket: whoever may open the socket may use the whole API already.

Every state-changing request also carries a CSRF token: an HMAC of the caller's identity (the
``x-carte-peer`` value, "local" on the unix socket) under a key made at start, so a page from
another origin, which cannot read ours, cannot forge one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from carte.api.errors import CarteError
from carte.handlers.http import Headers, PeerHeaderGuard

TOKEN_FILE = "ui-token"
COOKIE = "carte_ui"
SESSION_SECONDS = 12 * 3600
OPEN_PATHS = frozenset({"/ui/login"})
ASSETS = "/ui/assets/"


class CsrfRefused(CarteError):
    """A state change without this caller's CSRF token."""

    code: ClassVar[str] = "permission_denied"
    status: ClassVar[int] = 403


def write_token(root: Path) -> str:
    """A fresh login token in ``root``/ui-token (0600, replaced at every start)."""
    token = secrets.token_urlsafe(24)
    path = root / TOKEN_FILE
    temporary = path.with_name(TOKEN_FILE + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{token}\n".encode())
    finally:
        os.close(fd)
    temporary.replace(path)
    return token


class Credentials:
    """The token, the live sessions and the CSRF key of one handler run (all in memory: a
    restart logs everyone out)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, float] = {}

    def login(self, offered: str) -> str | None:
        """A new session id when ``offered`` is the token, else None."""
        if not hmac.compare_digest(offered.strip().encode(), self.token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = time.monotonic() + SESSION_SECONDS
        return session

    def session(self, cookie: str | None) -> str | None:
        """The session of a cookie value while it lives, else None."""
        if not cookie:
            return None
        expires = self._sessions.get(cookie)
        if expires is None:
            return None
        if expires < time.monotonic():
            del self._sessions[cookie]
            return None
        return cookie

    def logout(self, session: str) -> None:
        self._sessions.pop(session, None)

    def csrf(self, identity: str) -> str:
        return hmac.new(self._key, identity.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, identity: str, offered: str) -> bool:
        return hmac.compare_digest(self.csrf(identity).encode(), offered.encode())


def identity_of(peer: str) -> str:
    """Who asks, from the ``x-carte-peer`` value ("" on the unix socket)."""
    return peer or "local"


def session_of(peer: str) -> str:
    """The session id in an ``x-carte-peer`` value of the loopback listener, else ""."""
    return peer.removeprefix("ui-session/") if peer.startswith("ui-session/") else ""


class LoginGuard(PeerHeaderGuard):
    """ASGI wrapper of the loopback listener: see the module docstring."""

    def __init__(self, app: Any, credentials: Credentials) -> None:
        super().__init__(app)
        self.credentials = credentials

    async def admit(self, scope: Any, headers: Headers, send: Any) -> str | None:
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith(ASSETS):
            return ""
        session = self.credentials.session(_cookie(headers))
        if session is None or (scope["type"] == "websocket" and not _same_origin(headers)):
            await _refuse(scope, send)
            return None
        return f"ui-session/{session}"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in headers if key == name), "")


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    try:
        jar = SimpleCookie(_header(headers, b"cookie"))
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def _same_origin(headers: list[tuple[bytes, bytes]]) -> bool:
    """A WebSocket opened by one of our pages (browsers always send Origin with one)."""
    host = _header(headers, b"host")
    return bool(host) and _header(headers, b"origin") == f"http://{host}"


async def _refuse(scope: Any, send: Any) -> None:
    """Close a WebSocket before it opens; redirect a page to the login form; 401 the rest."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "log in first"})
        return
    page = scope["method"] == "GET" and not scope["path"].endswith(".json")
    if page:
        location = "/ui/login?next=" + quote(scope["path"], safe="/")
        status, extra = 303, [(b"location", location.encode())]
        body = b""
    else:
        status, extra = 401, []
        body = b"401: log in at /ui/login with the token in ROOT/ui-token\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
