"""`Store` over etcd v3, through its HTTP/JSON gateway (httpx on trio).

Why the gateway and not gRPC: grpcio's async API runs on asyncio only (its trio support is
none), so a watch would need a thread per stream and a bridge; the gateway's ``/v3/watch``
is a plain chunked HTTP response of one JSON object per line that httpx streams natively
on trio (through anyio), cancellable like any other trio read.

Mapping: Carte's revision is etcd's revision (the header's, global); an entry's revision is
its ``mod_revision``, so ``cas(key, value, 0)`` compares ``mod_revision == 0`` (absent). Keys
live under ``namespace`` (several daemons or tests can share one etcd). A `txn` is one etcd
Txn: compares on ``mod_revision``, the operations on success, reads of the compared keys on
failure (to name the revision found).

Failure: a request that cannot connect tries the next endpoint; when none answers, the call
raises `Unavailable` naming the endpoints (callers retry with `retry_unavailable`). A write
whose connection broke after it was sent also raises Unavailable, saying its outcome is
unknown. Writes are shielded from cancellation while in flight (bounded by the request
timeout), as SQLite's commits are, so a cancelled caller never leaves one half-reported.
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

import h11
import httpx
import trio

from carte.api.errors import Conflict, Internal, InvalidArgument, Unavailable
from carte.engine.store import (
    Change,
    Delete,
    Entry,
    LeaseExpired,
    Operation,
    Put,
    Watch,
    WatchLagged,
    encode_value,
    open_nursery_unwrapped,
)

log = logging.getLogger("carte.engine.store_etcd")

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = httpx.Timeout(10.0, connect=CONNECT_TIMEOUT)
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


class _EtcdWatch:
    def __init__(self, prefix: str, buffer: int) -> None:
        self.prefix = prefix
        self.buffer = buffer
        self.send, self._receive = trio.open_memory_channel[Change](buffer)
        self.error: Exception | None = None

    def offer(self, change: Change) -> None:
        try:
            self.send.send_nowait(change)
        except trio.WouldBlock:
            self.end(
                WatchLagged(
                    f'watch on "{self.prefix}" fell more than {self.buffer} changes behind; '
                    "list the prefix again and start a new watch"
                )
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def end(self, error: Exception | None) -> None:
        if self.error is None:
            self.error = error
        self.send.close()

    def __aiter__(self) -> _EtcdWatch:
        return self

    async def __anext__(self) -> Change:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.error is not None:
                raise self.error from None
            raise StopAsyncIteration from None


class EtcdStore:
    """`Store` on an etcd v3 cluster. Open it with `open_etcd_store`."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoints: Sequence[str],
        namespace: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise InvalidArgument("no etcd endpoints given; set store.endpoints in carte.yaml")
        self._client = client
        self._tls = tls
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self.namespace = namespace
        self._current = 0

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
        watch = _EtcdWatch(prefix, buffer)
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
        watch: _EtcdWatch,
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
        """POST ``body`` and yield each JSON line of the streamed reply (h11 on a trio stream).

        A plain trio stream rather than httpx's: its nested async generators cannot be
        closed when a watch is left mid-stream, which trio reports as a ResourceWarning.
        Raises Unavailable when etcd cannot be reached or the connection breaks.
        """
        url = httpx.URL(endpoint)
        host, port = url.host, url.port or (443 if url.scheme == "https" else 80)
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(host, port)
                if url.scheme == "https":
                    stream = trio.SSLStream(
                        stream, self._tls or ssl.create_default_context(), server_hostname=host
                    )
                    await stream.do_handshake()
            connection = h11.Connection(h11.CLIENT)
            data = json.dumps(body).encode()
            request = h11.Request(
                method="POST",
                target=path,
                headers=[
                    ("Host", f"{host}:{port}"),
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(data))),
                ],
            )
            await stream.send_all(
                connection.send(request)
                + (connection.send(h11.Data(data=data)) or b"")
                + (connection.send(h11.EndOfMessage()) or b"")
            )
            pending = b""
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    if event.status_code != 200:
                        raise Unavailable(
                            f"etcd at {endpoint} refused a watch (HTTP {event.status_code}); "
                            "check store.endpoints in carte.yaml"
                        )
                elif isinstance(event, h11.Data):
                    pending += bytes(event.data)
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError) as error:
            self._rotate()
            raise Unavailable(
                f"etcd at {endpoint} is unreachable ({error or type(error).__name__}); "
                "check that etcd runs and store.endpoints in carte.yaml, then retry"
            ) from None
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await stream.aclose()

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
        """POST ``body`` to ``path`` on the first endpoint that connects."""
        failures: builtins.list[str] = []
        for _ in self.endpoints:
            endpoint = self._endpoint()
            try:
                response = await self._client.post(endpoint + path, json=body)
            except httpx.ConnectError as error:  # never sent: safe to try the next one
                failures.append(f"{endpoint} ({error or 'cannot connect'})")
                self._rotate()
                continue
            except httpx.TransportError as error:
                self._rotate()
                outcome = "; the write may or may not have been applied" if write else ""
                raise Unavailable(
                    f"etcd at {endpoint} failed mid-request ({error or type(error).__name__})"
                    f"{outcome}; check etcd, then read again and retry"
                ) from None
            if response.status_code != 200:
                raise self._error(endpoint, response)
            reply: dict[str, Any] = response.json()
            return reply
        raise Unavailable(
            f"etcd is unreachable at {', '.join(failures)}; check that etcd runs and "
            "store.endpoints in carte.yaml, then retry"
        )

    def _error(self, endpoint: str, response: httpx.Response) -> Exception:
        try:
            detail = response.json()
        except ValueError:
            detail = {"message": response.text.strip()[:200]}
        message = str(detail.get("message") or detail.get("error") or response.status_code)
        code = detail.get("code")
        if code == _GRPC_NOT_FOUND and "lease" in message:
            return LeaseExpired(
                f"{message} at {endpoint}: the lease expired or was revoked; grant a new lease "
                "and write its keys again"
            )
        if code == _GRPC_UNAVAILABLE or response.status_code in (502, 503, 504):
            return Unavailable(f"etcd at {endpoint} is unavailable ({message}); retry later")
        return Internal(f"etcd at {endpoint} refused the request: {message}")

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._client.aclose()


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
    client = httpx.AsyncClient(
        timeout=REQUEST_TIMEOUT,
        verify=tls if tls is not None else True,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=8),
    )
    store = EtcdStore(client, endpoints, namespace, tls)
    try:
        yield store
    finally:
        await store.aclose()
