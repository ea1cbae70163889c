"""One request to a control plane over TLS (h11 on a trio SSLStream; one per connection).

Used by a worker: to fetch the CA before it trusts it (unverified, then pinned by the join
token's hash), to join, and to send heartbeats with its node certificate.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import h11
import trio

from carte.api.errors import ERRORS_BY_CODE, CarteError, Unavailable
from carte.cluster.pki import Refused

CONNECT = 2.0
"""Seconds a connection to a control plane may take (a host cut off by a partition never
refuses it; a node then tries another control plane, or again later)."""


def unverified_context() -> ssl.SSLContext:
    """For fetching the CA only: what it returns is checked against the token's hash."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def pinned_context(ca_pem: bytes, certs: Path | None = None) -> ssl.SSLContext:
    """Trust only the cluster CA; present ``certs``' cert.pem/key.pem when given."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certs is not None:
        context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    return context


async def call(
    host: str,
    port: int,
    context: ssl.SSLContext,
    method: str,
    path: str,
    body: Any = None,
) -> Any:
    """The decoded JSON answer of ``method path``; raises the server's error as a CarteError
    (Refused for 401/403) and Unavailable when it cannot be reached (or does not accept the
    connection within `CONNECT` seconds)."""
    where = f"tcp://{host}:{port}"
    try:
        with trio.fail_after(CONNECT):
            stream = await trio.open_tcp_stream(host, port)
    except OSError as error:
        raise Unavailable(
            f"cannot reach the control plane at {where}: {error.strerror or error}"
        ) from None
    except trio.TooSlowError:
        raise Unavailable(
            f"cannot reach the control plane at {where}: no answer in {CONNECT:g} s"
        ) from None
    tls = trio.SSLStream(stream, context, server_hostname=host)
    try:
        data = b"" if body is None else json.dumps(body).encode()
        connection = h11.Connection(h11.CLIENT)
        headers = [("Host", host), ("Content-Length", str(len(data))), ("Connection", "close")]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        try:
            await tls.send_all(
                connection.send(h11.Request(method=method, target=path, headers=headers))
                + (connection.send(h11.Data(data=data)) or b"")
                + (connection.send(h11.EndOfMessage()) or b"")
            )
            status, reply = await _read(tls, connection)
        except trio.BrokenResourceError as error:
            raise Unavailable(
                f"TLS with the control plane at {where} failed: {_cause(error)}"
            ) from None
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(tls)
    if status >= 400:
        raise _error(status, reply)
    return json.loads(reply or b"null")


async def _read(
    tls: trio.SSLStream[trio.SocketStream], connection: h11.Connection
) -> tuple[int, bytes]:
    status, parts = 0, []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await tls.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, b"".join(parts)


def _cause(error: BaseException) -> str:
    cause = error.__cause__
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause)
    return str(cause or error) or type(error).__name__


def _error(status: int, reply: bytes) -> CarteError:
    try:
        detail = json.loads(reply)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "internal", reply.decode(errors="replace").strip() or f"HTTP {status}"
    if status in (401, 403):
        return Refused(f"the control plane refused: {message}")
    return ERRORS_BY_CODE.get(code, Unavailable)(f"the control plane answered: {message}")
