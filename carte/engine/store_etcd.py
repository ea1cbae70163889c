"""`Store` over etcd v3, through its HTTP/JSON gateway, spoken with h11 on trio streams.

Why the gateway and not gRPC: grpcio's async API runs on asyncio only, so a watch would need
a thread per stream and a bridge into trio. The gateway's ``/v3/watch`` is a chunked HTTP
response of one JSON object per line, read here from a plain trio stream: cancelling a watch
is cancelling a read. Why h11 and not httpx: httpx's streaming (and its request bodies on a
failed TLS handshake) leave nested async generators that cannot be closed from outside,
which trio reports as ResourceWarnings; h11 is a sans-I/O HTTP/1.1 parser that hypercorn
already brings, and a small pool of kept-alive connections is all the unary calls need.

Mapping: Carte's revision is etcd's revision (the header's, global); an entry's revision is
its ``mod_revision``, so ``cas(key, value, 0)`` compares ``mod_revision == 0`` (absent). Keys
live under ``namespace`` (several daemons or tests can share one etcd). A `txn` is one etcd
Txn: compares on ``mod_revision``, the operations on success, reads of the compared keys on
failure (to name the revision found).

Failure: a request that cannot connect (or whose TLS handshake fails) tries the next
endpoint; when none answers, the call raises `Unavailable` naming the endpoints (callers
retry with `retry_unavailable`). A write whose connection broke after it was sent also
raises Unavailable, saying its outcome is unknown. Writes are shielded from cancellation
while in flight (bounded by `REQUEST_TIMEOUT`), as SQLite's commits are, so a cancelled
caller never leaves one half-reported.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

from carte.api.errors import Conflict, Internal, InvalidArgument, Unavailable
from carte.engine.store import (
    Change,
    Delete,
    Entry,
    LeaseExpired,
    Operation,
    Put,
    QueuedWatch,
    Watch,
    WatchLagged,
    encode_value,
    open_nursery_unwrapped,
)

log = logging.getLogger("carte.engine.store_etcd")

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 10.0
IDLE_CONNECTIONS = 4
_GRPC_NOT_FOUND = 5
_GRPC_UNAVAILABLE = 14


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_end(start: bytes) -> bytes:
    """The smallest key after every key starting with ``start`` (b"\\0": to the end)."""
    data = bytearray(start)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\0"


class EtcdStore:
    """`Store` on an etcd v3 cluster. Open it with `open_etcd_store`."""

    def __init__(
        self,
        endpoints: Sequence[str],
        namespace: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise InvalidArgument("no etcd endpoints given; set store.endpoints in carte.yaml")
        self._tls = tls
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self.namespace = namespace
        self._current = 0
        self._idle: dict[str, builtins.list[_Connection]] = {}

    # --- keys -----------------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return (self.namespace + key).encode()

    def _unkey(self, raw: str) -> str:
        return _unb64(raw).decode()[len(self.namespace) :]

    def _range(self, prefix: str) -> dict[str, str]:
        start = self._key(prefix)
        if not start:
            start = b"\0"
        return {"key": _b64(start), "range_end": _b64(_range_end(self._key(prefix)))}

    def _entry(self, kv: Mapping[str, Any]) -> Entry:
        return Entry(
            key=self._unkey(kv["key"]),
            value=_unb64(kv.get("value")),
            revision=int(kv.get("mod_revision", 0)),
        )

    # --- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        reply = await self._call("/v3/kv/range", {"key": _b64(self._key(key))})
        kvs = reply.get("kvs") or []
        return self._entry(kvs[0]) if kvs else None

    async def list(self, prefix: str = "") -> builtins.list[Entry]:
        return (await self.snapshot(prefix))[0]

    async def snapshot(self, prefix: str = "") -> tuple[builtins.list[Entry], int]:
        reply = await self._call("/v3/kv/range", self._range(prefix))
        entries = [self._entry(kv) for kv in reply.get("kvs") or []]
        return entries, int(reply["header"]["revision"])

    async def revision(self) -> int:
        reply = await self._call("/v3/kv/range", {"key": _b64(b"\0"), "count_only": True})
        return int(reply["header"]["revision"])

    # --- writes ---------------------------------------------------------------------------

    async def put(self, key: str, value: object, *, lease: int | None = None) -> int:
        return await self.txn([Put(key, value, lease)])

    async def delete(self, key: str) -> int | None:
        reply = await self._write("/v3/kv/deleterange", {"key": _b64(self._key(key))})
        return int(reply["header"]["revision"]) if int(reply.get("deleted", 0)) else None

    async def cas(self, key: str, value: object, revision: int) -> int:
        return await self.txn([Put(key, value)], expect={key: revision})

    async def txn(self, operations: Sequence[Operation], expect: Mapping[str, int] = {}) -> int:
        """See `Store.txn`: one etcd Txn. Raises Conflict naming the first changed key."""
        requests: builtins.list[dict[str, Any]] = []
        for op in operations:
            if isinstance(op, Delete):
                requests.append({"request_delete_range": {"key": _b64(self._key(op.key))}})
                continue
            put: dict[str, Any] = {
                "key": _b64(self._key(op.key)),
                "value": _b64(encode_value(op.value)),
            }
            if op.lease is not None:
                put["lease"] = str(op.lease)
            requests.append({"request_put": put})
        keys = builtins.list(expect)
        body = {
            "compare": [
                {
                    "key": _b64(self._key(key)),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": str(expect[key]),
                }
                for key in keys
            ],
            "success": requests,
            "failure": [{"request_range": {"key": _b64(self._key(key))}} for key in keys],
        }
        reply = await self._write("/v3/kv/txn", body)
        if keys and not reply.get("succeeded"):
            for key, response in zip(keys, reply.get("responses") or [], strict=False):
                kvs = response.get("response_range", {}).get("kvs") or []
                found = int(kvs[0].get("mod_revision", 0)) if kvs else 0
                if found != expect[key]:
                    raise Conflict(
                        f'key "{key}" changed: expected revision {expect[key]}, found {found}; '
                        "read it again and retry"
                    )
            raise Conflict(f"keys {', '.join(keys)} changed; read them again and retry")
        return int(reply["header"]["revision"])

    # --- leases ---------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        reply = await self._write("/v3/lease/grant", {"TTL": str(max(int(ttl), 1))})
        return int(reply["ID"])

    async def keep_alive(self, lease: int) -> int:
        reply = await self._write("/v3/lease/keepalive", {"ID": str(lease)})
        ttl = int(reply.get("result", reply).get("TTL", 0))
        if ttl <= 0:
            raise LeaseExpired(
                f"lease {lease:x} not found: it expired or was revoked; grant a new lease and "
                "write its keys again"
            )
        return ttl

    async def revoke_lease(self, lease: int) -> None:
        try:
            await self._write("/v3/lease/revoke", {"ID": str(lease)})
        except LeaseExpired:
            pass

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (etcd-only; watches from before it are refused)."""
        await self._write("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    # --- watch ----------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, prefix: str = "", *, buffer: int = 256, since: int | None = None
    ) -> AsyncIterator[Watch]:
        """See `Store.watch`: one ``/v3/watch`` stream read by a task of this block.

        The block is entered once etcd confirmed the watch. A compacted ``since`` or a
        watcher ``buffer`` changes behind ends the iterator with WatchLagged; a stream that
        breaks (etcd gone) with Unavailable. Leaving the block closes the stream.
        """
        watch = QueuedWatch(prefix, buffer)
        create: dict[str, Any] = dict(self._range(prefix))
        if since is not None:
            create["start_revision"] = str(since + 1)
        async with open_nursery_unwrapped() as nursery:
            await nursery.start(self._follow_stream, watch, {"create_request": create})
            try:
                yield watch
            finally:
                nursery.cancel_scope.cancel()
                watch.send.close()

    async def _follow_stream(
        self,
        watch: QueuedWatch,
        body: dict[str, Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read the watch stream into ``watch``; started once etcd confirmed the watch.

        An error before that is raised to the caller of `watch`; after it, it ends the
        watch's iterator (WatchLagged or Unavailable).
        """
        started = False
        endpoint = self._endpoint()
        try:
            messages = self._stream_lines(endpoint, "/v3/watch", body)
            async with aclosing(messages):
                async for message in messages:
                    if "error" in message:
                        raise Unavailable(
                            f"etcd watch at {endpoint} failed: {message['error'].get('message')}; "
                            "list the prefix again and start a new watch"
                        )
                    result = message.get("result", {})
                    if result.get("compact_revision"):
                        since = int(body["create_request"].get("start_revision", 1)) - 1
                        raise WatchLagged(
                            f'watch on "{watch.prefix}" from revision {since}: compacted (etcd '
                            f"keeps changes from revision {result['compact_revision']}); "
                            "list the prefix again"
                        )
                    if result.get("canceled"):
                        raise Unavailable(
                            f'etcd at {endpoint} cancelled the watch on "{watch.prefix}" '
                            f"({result.get('cancel_reason', 'no reason given')}); "
                            "list the prefix again and start a new watch"
                        )
                    if result.get("created") and not started:
                        started = True
                        task_status.started()
                    for event in result.get("events") or []:
                        kv = event["kv"]
                        deleted = event.get("type") == "DELETE"
                        watch.offer(
                            Change(
                                key=self._unkey(kv["key"]),
                                value=None if deleted else _unb64(kv.get("value")),
                                revision=int(kv["mod_revision"]),
                            )
                        )
                raise Unavailable(
                    f'etcd at {endpoint} ended the watch on "{watch.prefix}"; '
                    "list the prefix again and start a new watch"
                )
        except Unavailable as error:
            if not started:
                raise
            watch.end(error)
        finally:
            watch.send.close()

    async def _stream_lines(
        self, endpoint: str, path: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POST ``body`` on a connection of its own and yield each JSON line of the reply.

        Raises Unavailable when etcd cannot be reached or the connection breaks.
        """
        try:
            connection = await self._connect(endpoint)
        except _NotConnected as error:
            self._rotate()
            raise Unavailable(
                f"etcd at {endpoint} is unreachable ({error}); "
                "check that etcd runs and store.endpoints in carte.yaml, then retry"
            ) from None
        try:
            await connection.send_request(path, body)
            response = await connection.next_event()
            if not isinstance(response, h11.Response) or response.status_code != 200:
                raise Unavailable(
                    f"etcd at {endpoint} refused a watch ({_status(response)}); "
                    "check store.endpoints in carte.yaml"
                )
            pending = b""
            while True:
                event = await connection.next_event()
                if isinstance(event, h11.Data):
                    pending += bytes(event.data)
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return
        except _BROKEN as error:
            self._rotate()
            raise Unavailable(
                f"etcd at {endpoint} is unreachable ({_describe(error)}); "
                "check that etcd runs and store.endpoints in carte.yaml, then retry"
            ) from None
        finally:
            await connection.aclose()

    # --- plumbing -------------------------------------------------------------------------

    def _endpoint(self) -> str:
        return self.endpoints[self._current % len(self.endpoints)]

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    async def _write(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.CancelScope(shield=True):
            reply = await self._call(path, body, write=True)
        return reply

    async def _call(
        self, path: str, body: Mapping[str, Any], *, write: bool = False
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that connects; the reply's JSON."""
        failures: builtins.list[str] = []
        for _ in self.endpoints:
            endpoint = self._endpoint()
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    status, reply = await self._request(endpoint, path, body)
            except _NotConnected as error:  # never sent: safe to try the next one
                failures.append(f"{endpoint} ({error})")
                self._rotate()
                continue
            except (*_BROKEN, trio.TooSlowError) as error:
                self._rotate()
                outcome = "; the write may or may not have been applied" if write else ""
                raise Unavailable(
                    f"etcd at {endpoint} failed mid-request ({_describe(error)}){outcome}; "
                    "check etcd, then read again and retry"
                ) from None
            if status != 200:
                raise self._error(endpoint, status, reply)
            try:
                decoded: dict[str, Any] = json.loads(reply)
            except ValueError:
                raise Internal(f"etcd at {endpoint} answered {path} with non-JSON") from None
            return decoded
        raise Unavailable(
            f"etcd is unreachable at {', '.join(failures)}; check that etcd runs and "
            "store.endpoints in carte.yaml, then retry"
        )

    async def _request(
        self, endpoint: str, path: str, body: Mapping[str, Any]
    ) -> tuple[int, bytes]:
        """One request on a kept-alive connection (or a new one): (status, body).

        A kept-alive connection that etcd closed while idle fails before any reply and
        the request is sent again on a new one (etcd never read it).
        """
        for reused in (True, False):
            connection = self._take_idle(endpoint) if reused else None
            if reused and connection is None:
                continue
            if connection is None:
                connection = await self._connect(endpoint)
            try:
                await connection.send_request(path, body)
                response = await connection.next_event()
                if isinstance(response, h11.ConnectionClosed) and reused:
                    await connection.aclose()
                    continue
                if not isinstance(response, h11.Response):
                    raise h11.RemoteProtocolError(f"etcd answered {_status(response)}")
                data = bytearray()
                while True:
                    event = await connection.next_event()
                    if isinstance(event, h11.Data):
                        data += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        raise h11.RemoteProtocolError("etcd closed the connection mid-reply")
            except _BROKEN:
                await connection.aclose()
                if reused and not connection.answered:
                    continue
                raise
            except BaseException:
                await connection.aclose()
                raise
            await self._give_back(endpoint, connection)
            return response.status_code, bytes(data)
        raise h11.RemoteProtocolError("etcd closed two connections in a row")

    async def _connect(self, endpoint: str) -> _Connection:
        """A new connection to ``endpoint``; raises _NotConnected (nothing was sent)."""
        url = urlsplit(endpoint)
        host = url.hostname or "127.0.0.1"
        port = url.port or (443 if url.scheme == "https" else 80)
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(host, port)
                if url.scheme == "https":
                    tls = trio.SSLStream(
                        stream, self._tls or ssl.create_default_context(), server_hostname=host
                    )
                    stream = tls
                    await tls.do_handshake()
        except (*_BROKEN, trio.TooSlowError) as error:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise _NotConnected(_describe(error)) from None
        return _Connection(stream, f"{host}:{port}")

    def _take_idle(self, endpoint: str) -> _Connection | None:
        idle = self._idle.get(endpoint)
        return idle.pop() if idle else None

    async def _give_back(self, endpoint: str, connection: _Connection) -> None:
        idle = self._idle.setdefault(endpoint, [])
        if connection.reusable() and len(idle) < IDLE_CONNECTIONS:
            idle.append(connection)
        else:
            await connection.aclose()

    def _error(self, endpoint: str, status: int, reply: bytes) -> Exception:
        try:
            detail = json.loads(reply)
        except ValueError:
            detail = {"message": reply.decode(errors="replace").strip()[:200]}
        message = str(detail.get("message") or detail.get("error") or status)
        code = detail.get("code")
        if code == _GRPC_NOT_FOUND and "lease" in message:
            return LeaseExpired(
                f"{message} at {endpoint}: the lease expired or was revoked; grant a new lease "
                "and write its keys again"
            )
        if code == _GRPC_UNAVAILABLE or status in (502, 503, 504):
            return Unavailable(f"etcd at {endpoint} is unavailable ({message}); retry later")
        return Internal(f"etcd at {endpoint} refused the request: {message}")

    async def aclose(self) -> None:
        """Close every kept-alive connection."""
        with trio.CancelScope(shield=True):
            for idle in self._idle.values():
                for connection in idle:
                    await connection.aclose()
            self._idle.clear()


class _NotConnected(Exception):
    """No connection could be made: the request was not sent."""


_BROKEN = (
    OSError,
    ssl.SSLError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.ProtocolError,
)


def _describe(error: BaseException) -> str:
    if isinstance(error, trio.TooSlowError):
        return "timed out"
    cause = error.__cause__ if isinstance(error, trio.BrokenResourceError) else None
    text = str(cause or error).strip()
    return text or type(error).__name__


def _status(event: object) -> str:
    if isinstance(event, h11.Response):
        return f"HTTP {event.status_code}"
    return "no response"


class _Connection:
    """One HTTP/1.1 connection to etcd: a trio stream and its h11 state."""

    def __init__(self, stream: trio.abc.Stream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.h11 = h11.Connection(h11.CLIENT)
        self.answered = False

    async def send_request(self, path: str, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        request = h11.Request(
            method="POST",
            target=path,
            headers=[
                ("Host", self.host),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
            ],
        )
        self.answered = False
        await self.stream.send_all(
            (self.h11.send(request) or b"")
            + (self.h11.send(h11.Data(data=data)) or b"")
            + (self.h11.send(h11.EndOfMessage()) or b"")
        )

    async def next_event(self) -> object:
        """The next h11 event, reading from the stream as needed (EOF: ConnectionClosed)."""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(bytes(await self.stream.receive_some(65536)))
                continue
            self.answered = True
            return event

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)


def tls_context(ca: str | None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client TLS context trusting ``ca`` (None: the system's CAs), presenting
    ``cert``/``key`` if given.

    Raises Unavailable naming the file when one cannot be read.
    """
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise Unavailable(
            f"cannot load etcd TLS files (ca {ca}, cert {cert}, key {key}): {error}; "
            "check store.tls in carte.yaml"
        ) from None
    return context


@asynccontextmanager
async def open_etcd_store(
    endpoints: Sequence[str],
    *,
    namespace: str = "",
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[EtcdStore]:
    """An `EtcdStore` on ``endpoints`` (``http://HOST:PORT`` or ``https://`` with ``tls``).

    Nothing is checked at open: the first call tells whether etcd answers (Unavailable if
    not), so a daemon starts while etcd is still coming up. Closed when the block exits.
    """
    store = EtcdStore(endpoints, namespace, tls)
    try:
        yield store
    finally:
        await store.aclose()
