"""The API over TCP: mutual TLS with the cluster CA, beside the unix socket.

A daemon given ``cluster.listen`` (``--listen tcp://ADDR:PORT``, or set by ``carte cluster
init`` / ``carte node join``) serves the same application on that address once its bundle
(ca.pem, cert.pem, key.pem in the directory the membership handler names in
`ClusterConfigured`) exists. The TLS context asks every client for a certificate
(``CERT_OPTIONAL``, verified against the cluster CA by OpenSSL: a foreign or expired one fails
the handshake); `PeerGuard` then lets a request through only when:

* it carries a certificate the membership handler accepts (`IdentifyPeer`: not revoked,
  a Carte role) — ``node`` certificates reach only ``/v1/cluster/*``; or
* it has none and asks for one of `OPEN_PATHS` (fetching the CA, joining with a token).

The verified peer is handed to routes as the ``x-carte-peer: ROLE/NAME`` header (any such
header a client sent is dropped first, on the unix socket too).

How the certificate reaches the request: hypercorn gives the ASGI app no TLS details, so
the context's ``sslobject_class`` records the peer certificate in a context variable when
the handshake completes. The handshake runs in the connection's task and hypercorn spawns
the request tasks from it, so each request sees its own connection's certificate; a request
that somehow did not would see none and be refused (fails closed).

Plain TCP is served only for a loopback ``listen`` with ``insecure`` (the config refuses
anything else at start); its requests are trusted like the unix socket's.
"""

from __future__ import annotations

import logging
import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from carte.api.errors import CarteError
from carte.api.events import ClusterConfigured, IdentifyPeer
from carte.engine import Bus
from carte.handlers.http._peer import Headers, PeerHeaderGuard

OPEN_PATHS = frozenset({"/_ping", "/v1/cluster/ca", "/v1/cluster/join"})
NODE_PREFIX = "/v1/cluster/"

peer_certificate: ContextVar[bytes | None] = ContextVar("carte_peer_certificate", default=None)

_encoder = msgspec.json.Encoder()


class _PeerRecordingSSLObject(ssl.SSLObject):
    """An SSLObject that leaves the verified peer certificate (DER) in `peer_certificate`."""

    def do_handshake(self) -> None:
        super().do_handshake()
        peer_certificate.set(self.getpeercert(binary_form=True))


def server_context(certs: Path) -> ssl.SSLContext:
    """TLS 1.2+ serving ``certs``/cert.pem, asking clients for a certificate of ``certs``/ca.pem."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    context.verify_mode = ssl.CERT_OPTIONAL
    context.sslobject_class = _PeerRecordingSSLObject
    return context


class _TlsConfig(HypercornConfig):
    """hypercorn's config with our own server context (it would build its own otherwise)."""

    context: ssl.SSLContext | None = None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self.context


class PeerGuard(PeerHeaderGuard):
    """ASGI wrapper of the TCP listener: see the module docstring."""

    def __init__(self, app: Any, bus: Bus, *, trusted: bool) -> None:
        super().__init__(app)
        self.bus = bus
        self.trusted = trusted

    async def admit(self, scope: Any, headers: Headers, send: Any) -> str | None:
        if self.trusted:
            return ""
        try:
            return await self._peer(scope["path"])
        except CarteError as error:
            await _refuse(scope, send, error.status, error.code, error.message)
            return None

    async def _peer(self, path: str) -> str:
        der = peer_certificate.get()
        if der is None:
            if path in OPEN_PATHS:
                return ""
            raise _Unauthenticated(
                "this API needs a client certificate signed by the cluster CA; put ca.pem, "
                "cert.pem and key.pem in ~/.carte (or CARTE_CERT_PATH): carte cluster init "
                "writes them for the admin",
            )
        peer = await self.bus.request(IdentifyPeer(cert=ssl.DER_cert_to_PEM_cert(der)))
        if peer.startswith("node/") and not path.startswith(NODE_PREFIX):
            raise _Forbidden(
                f'node certificate "{peer[5:]}" may only call /v1/cluster/*; use an admin '
                "client certificate for the rest of the API",
            )
        return peer


class _Unauthenticated(CarteError):
    code: ClassVar[str] = "unauthenticated"
    status: ClassVar[int] = 401


class _Forbidden(CarteError):
    code: ClassVar[str] = "permission_denied"
    status: ClassVar[int] = 403


async def _refuse(scope: Any, send: Any, status: int, code: str, message: str) -> None:
    kind = "http"
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        kind = "websocket.http"  # the upgrade is refused with the same JSON error body
    body = _encoder.encode({"error": {"code": code, "message": message}})
    await send(
        {
            "type": f"{kind}.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": f"{kind}.response.body", "body": body})


class TcpListener:
    """Serves the app on the cluster's TCP address; follows `ClusterConfigured` facts.

    `run` waits for a listen address and its bundle, serves until the settings change, then
    serves again with the new ones. A bind or certificate failure is logged (one line) and
    waited out until the next change: the unix socket keeps serving meanwhile.
    """

    def __init__(self, bus: Bus, log: logging.Logger, backlog: int) -> None:
        self.bus = bus
        self.log = log
        self.backlog = backlog
        self.settings: ClusterConfigured | None = None
        self._changed = trio.Event()

    def configure(self, settings: ClusterConfigured) -> None:
        if settings != self.settings:
            self.settings = settings
            self._changed.set()

    async def run(self, app: Any) -> None:
        while True:
            self._changed = trio.Event()
            settings = self.settings
            if settings is not None and settings.listen:
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._cancel_on_change, scope)
                        await self._serve(app, settings)
                        nursery.cancel_scope.cancel()
            await self._changed.wait()

    async def _cancel_on_change(self, scope: trio.CancelScope) -> None:
        await self._changed.wait()
        scope.cancel()

    async def _serve(self, app: Any, settings: ClusterConfigured) -> None:
        config = _TlsConfig()
        address = settings.listen.removeprefix("tcp://")
        config.backlog = self.backlog
        config.accesslog = None
        config.errorlog = self.log
        config.graceful_timeout = 1.0
        trusted = settings.insecure
        if settings.insecure:
            config.bind = [address]
        else:
            certs = Path(settings.certs)
            if not settings.certs or not (certs / "cert.pem").exists():
                self.log.info(
                    "TCP listener waits for the cluster certificates (carte cluster init)",
                    extra={"listen": settings.listen},
                )
                return
            try:
                config.context = server_context(certs)
            except (OSError, ssl.SSLError) as error:
                self.log.error(
                    "cannot load the cluster certificates; not serving TCP",
                    extra={"dir": str(certs), "error": error},
                )
                return
            config.bind = [address]
            config.certfile = str(certs / "cert.pem")  # what makes hypercorn serve TLS
            config.keyfile = str(certs / "key.pem")
        self.log.info(
            "serving the API on TCP",
            extra={"listen": settings.listen, "tls": not settings.insecure},
        )
        try:
            await serve(PeerGuard(app, self.bus, trusted=trusted), config)
        except OSError as error:
            self.log.error(
                "cannot serve the API on TCP", extra={"listen": settings.listen, "error": error}
            )
