"""Who called the API and how long it took: the audit log and the request latencies.

`RequestRecorder` wraps the application (unix socket and TCP listener alike, and the Docker
API's app on its socket). For every request it observes the time to answer in `Latencies` by
method, route template and status;
for every request that may change state (any method but GET/HEAD/OPTIONS, a GET with
``start=1`` — the logs route ``carte run`` starts its container with —, and WebSocket
sessions: attach and exec) it hands one `AuditEntry` to the `AuditLog`:

    {"time": "...+00:00", "who": {"transport": "unix", "uid": 0, "gid": 0, "pid": 4242},
     "api": "carte", "method": "POST", "path": "/v1/commands/RemoveContainer",
     "route": "/v1/commands/<name>", "object": "nope", "status": 404, "duration": 0.0021}

Who: over the unix socket, the peer's credentials (SO_PEERCRED) read from the connection's
socket (``api`` says which socket: ``carte`` or ``docker``; the Docker socket's front relays
each connection to the app's private socket from an abstract address naming the client's
credentials, `connect_relaying`, trusted only on a connection the daemon itself made); over
TCP, the client certificate's subject CN and the role the cluster gave it (a request refused
before it reaches the app, for lack of a certificate, is not recorded). The object is the
route's ``<ref>``/``<name>`` placeholder (else the query's ``name``, as Docker's create takes
it), or for ``/v1/commands/<Name>`` the command body's top-level ``ref``, ``name``,
``service`` or ``stack`` string: bodies, other query fields and headers are never written
(registry credentials and secrets travel there).

`AuditLog` appends JSON lines to one file (``O_APPEND``, mode 0600, directory 0700) from a
worker thread, so a slow disk never stalls the event loop; requests wait only to queue
their entry. Past ``max_bytes`` the file is rotated (``audit.log.1`` is the newest of
``keep`` old files). A write that fails is logged and the entry dropped; the API goes on.
The api and docker handlers each keep a writer (`open_audit_log`, from the api handler's
options); a per-file lock keeps their appends and rotations one at a time.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from carte.engine import HandlerContext
from carte.engine.timing import Latencies
from carte.handlers.http._options import ApiOptions
from carte.handlers.http._peer import PEER_HEADER
from carte.handlers.http._tls import peer_certificate

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OBJECT_KEYS = ("ref", "name", "service", "stack")
_OBJECT_PARAMS = ("ref", "name", "service", "stack")
_BODY_PEEK = 64 << 10  # a command body longer than this names no object in the log
_QUEUE = 1024
_AUDIT_WAIT = 5.0  # seconds a request waits for room in the queue; then its entry is lost
_RELAYED = "carte-peer/"  # abstract address of a relayed connection: carte-peer/UID/GID/PID/…
_FILE_LOCKS: dict[Path, threading.Lock] = {}
_FILE_LOCKS_LOCK = threading.Lock()

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the audit log (see the module docstring)."""

    time: str
    who: dict[str, str | int]
    api: str
    method: str
    path: str
    route: str
    object: str
    status: int
    duration: float


_encoder = msgspec.json.Encoder()


class AuditLog:
    """Appends entries to ``path`` from a worker thread; see the module docstring."""

    def __init__(self, path: Path, *, max_bytes: int, keep: int, log: logging.Logger) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.log = log
        self._send, self._receive = trio.open_memory_channel[AuditEntry](_QUEUE)
        with _FILE_LOCKS_LOCK:
            self._lock = _FILE_LOCKS.setdefault(path.absolute(), threading.Lock())

    async def append(self, entry: AuditEntry) -> None:
        """Queue ``entry``; waits only while the writer is ``_QUEUE`` entries behind."""
        await self._send.send(entry)

    async def run(self) -> None:
        """Write queued entries until cancelled (what is queued then is written first,
        shielded, at most for a second)."""
        try:
            async for entry in self._receive:
                batch = [entry]
                while True:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._write(batch)
        finally:
            with trio.move_on_after(1.0) as cleanup:
                cleanup.shield = True
                rest = []
                while True:
                    try:
                        rest.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                if rest:
                    await self._write(rest)

    async def _write(self, batch: list[AuditEntry]) -> None:
        lines = b"".join(_encoder.encode(entry) + b"\n" for entry in batch)
        try:
            await trio.to_thread.run_sync(self._append_lines, lines)
        except OSError as error:
            self.log.error(
                "cannot write the audit log; entries dropped",
                extra={"path": str(self.path), "entries": len(batch), "error": error},
            )

    def _append_lines(self, lines: bytes) -> None:
        """In a worker thread: rotate if these lines would pass ``max_bytes``, then append."""
        with self._lock:
            self._append_locked(lines)

    def _append_locked(self, lines: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(lines) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        """audit.log -> audit.log.1 -> ... -> audit.log.KEEP (the oldest is dropped)."""
        self.path.with_name(f"{self.path.name}.{self.keep}").unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{number + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))


def open_audit_log(ctx: HandlerContext) -> AuditLog:
    """The audit log the api handler's options (``handlers.options.api``) describe."""
    options = msgspec.convert(ctx.config.handlers.options.get("api", {}), ApiOptions)
    return AuditLog(
        Path(options.audit_log) if options.audit_log else ctx.root / "audit" / "audit.log",
        max_bytes=options.audit_max_bytes,
        keep=options.audit_keep,
        log=ctx.log,
    )


async def connect_relaying(path: Path, client: trio.socket.SocketType) -> trio.SocketStream:
    """A connection to the unix socket ``path`` on behalf of ``client`` (a unix socket
    connection the daemon accepted): from an abstract address naming the client's
    credentials, which the audit log then records as the caller."""
    pid, uid, gid = struct.unpack(
        "3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    )
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(f"\0{_RELAYED}{uid}/{gid}/{pid}/{secrets.token_hex(6)}")
        await sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return trio.SocketStream(sock)


class RequestRecorder:
    """ASGI wrapper: latency of every request, audit entry of every state change."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: QuartTrio,
        latencies: Latencies,
        audit: Callable[[AuditEntry], Awaitable[None]],
        api: str = "carte",
    ) -> None:
        self.app = app
        self.latencies = latencies
        self.audit = audit
        self.api = api
        self._adapter: MapAdapter = routes.url_map.bind("localhost")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        websocket = scope["type"] == "websocket"
        method = "WEBSOCKET" if websocket else scope["method"]
        started = time.monotonic()
        status = 500
        audited = method not in READ_ONLY_METHODS or _starts(scope)
        body = bytearray()

        async def recording_send(message: dict[str, Any]) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and status == 500:
                status = 403  # closed before it was accepted: refused
            await send(message)

        async def peeking_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request" and len(body) <= _BODY_PEEK:
                body.extend(message.get("body", b"")[: _BODY_PEEK + 1 - len(body)])
            return message

        peek = audited and scope["path"].startswith("/v1/commands/")
        who = _who(scope) if audited else {}  # now: the connection may be closed at the end
        try:
            await self.app(scope, peeking_receive if peek else receive, recording_send)
        finally:
            duration = time.monotonic() - started
            route, params = self._match(scope["path"], method, websocket)
            self.latencies.observe(duration, method=method, route=route, status=str(status))
            if audited:
                entry = AuditEntry(
                    time=_now(),
                    who=who,
                    api=self.api,
                    method=method,
                    path=scope["path"],
                    route=route,
                    object=_object(params, bytes(body) if peek else None, scope),
                    status=status,
                    duration=round(duration, 6),
                )
                with trio.move_on_after(_AUDIT_WAIT) as waiting:
                    waiting.shield = True  # a client that left still gets its entry
                    await self.audit(entry)

    def _match(self, path: str, method: str, websocket: bool) -> tuple[str, dict[str, Any]]:
        """The route template and its placeholders; "unmatched" for a path no route serves
        (one label for every unknown path keeps the metric's series bounded)."""
        try:
            rule, params = self._adapter.match(
                path,
                method="GET" if websocket else method,
                return_rule=True,
                websocket=websocket,
            )
        except HTTPException:
            return "unmatched", {}
        return rule.rule, dict(params)


def _starts(scope: Any) -> bool:
    """A GET that starts a container (``carte run``'s logs route with ``start=1``)."""
    query: bytes = scope.get("query_string", b"")
    return b"start=1" in query.split(b"&")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def _object(params: dict[str, Any], body: bytes | None, scope: Any) -> str:
    """The object a request names: a command body's (``body`` given), else the route's, else
    the query's ``name``."""
    if body is None:
        for key in _OBJECT_PARAMS:
            value = params.get(key)
            if isinstance(value, str):
                return value
        for field in scope.get("query_string", b"").split(b"&"):
            key, _, value = field.partition(b"=")
            if key == b"name":
                return urllib.parse.unquote(value.decode("latin-1"))
        return ""
    if not body or len(body) > _BODY_PEEK:
        return ""
    try:
        decoded = json.loads(body)
    except ValueError:
        return ""
    if isinstance(decoded, dict):
        for key in _OBJECT_KEYS:
            value = decoded.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _who(scope: Any) -> dict[str, str | int]:
    """The caller: unix peer credentials, or the TCP client's certificate (see module doc)."""
    client = scope.get("client")
    if not client:
        return {"transport": "unix", **_unix_peer()}
    who: dict[str, str | int] = {"transport": "tcp", "address": f"{client[0]}:{client[1]}"}
    for name, value in scope.get("headers", ()):
        if name == PEER_HEADER:
            role, _, _ = value.decode("latin-1").partition("/")
            who["role"] = role
    common_name = _certificate_cn(peer_certificate.get())
    if common_name:
        who["cn"] = common_name
    return who


def _certificate_cn(der: bytes | None) -> str:
    if der is None:
        return ""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _unix_peer() -> dict[str, int]:
    """SO_PEERCRED of this request's unix connection.

    hypercorn hands the app no socket, so the connection is found where trio keeps it: the
    request task was started by the connection's task, which trio's ``serve_listeners`` runs
    as ``_run_handler(stream, handler)``; its ``stream`` holds the socket. An empty answer
    (never expected) leaves the entry without uid rather than failing the request.
    """
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None:
        frame = getattr(task.coro, "cr_frame", None)
        stream = frame.f_locals.get("stream") if frame is not None else None
        sock = getattr(stream, "socket", None)
        if sock is not None and sock.family == socket.AF_UNIX:
            try:
                credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            except OSError:
                return {}
            pid, uid, gid = struct.unpack("3i", credentials)
            relayed = _relayed_peer(sock) if pid == os.getpid() else None
            return relayed or {"uid": uid, "gid": gid, "pid": pid}
        nursery = task.parent_nursery
        task = nursery.parent_task if nursery is not None else None
    return {}


def _relayed_peer(sock: Any) -> dict[str, int] | None:
    """The credentials `connect_relaying` put in the peer's abstract address, if it did."""
    try:
        address = sock.getpeername()
    except OSError:
        return None
    name = address.decode("latin-1") if isinstance(address, bytes) else str(address)
    fields = name.removeprefix(f"\0{_RELAYED}").split("/")
    if not name.startswith(f"\0{_RELAYED}") or len(fields) != 4:
        return None
    try:
        uid, gid, pid = (int(value) for value in fields[:3])
    except ValueError:
        return None
    return {"uid": uid, "gid": gid, "pid": pid}
