"""The scheduler's store keys and the control plane's routes for node agents.

Keys (etcd, control plane): ``cluster/services/<stack>/<service>`` (`ServicePlacement`),
``cluster/assignments/<node>/<name>`` (`Assignment`), ``cluster/status/<node>/<name>``
(`ReplicaStatus`), ``cluster/pending/<stack>/<service>`` ({replica: reason}).

Routes (TCP, mutual TLS; a node certificate may only name its own node):

* ``GET /v1/cluster/assignments?node=N`` — NDJSON: ``{"resync": [Assignment...],
  "revision": R}``, then ``{"put": Assignment}`` / ``{"delete": NAME}`` lines, a fresh
  resync whenever the store watch had to list again, and ``{"ping": true}`` every
  ``PING`` seconds so that both ends notice a dead link. Lives until the client leaves.
* ``POST /v1/cluster/status`` — a list of `ReplicaStatus`; each is written if it changed.
* ``GET /v1/cluster/image?name=REF`` — the image as an OCI archive, for a node that lacks an
  image built or imported on the control plane (404 when it has none either).
* ``GET /v1/cluster/files?node=N&name=REPLICA`` — the secrets and configs (`FileContent`,
  content in base64) of a replica assigned to node N, only to N (or an admin): a node gets
  none of another's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Response, request

from carte.api.cluster import Assignment, ReplicaStatus
from carte.api.errors import InvalidArgument, NotFound
from carte.api.events import ReadServiceFiles
from carte.cluster.pki import Refused
from carte.engine.handler import Route
from carte.engine.store import Change, Resync, Store, follow
from carte.image.archive import save
from carte.image.store import ImageStore

if TYPE_CHECKING:
    from carte.handlers.cluster._scheduler import SchedulerHandler

SERVICES = "cluster/services/"
ASSIGNMENTS = "cluster/assignments/"
STATUS = "cluster/status/"
PENDING = "cluster/pending/"
PING = 2.0
"""Seconds between keep-alive lines of an assignment stream (an agent gives up after 3)."""

_CHUNK = 1 << 20
_encoder = msgspec.json.Encoder()
_statuses = msgspec.json.Decoder(list[ReplicaStatus])


def assignment_key(node: str, name: str) -> str:
    return f"{ASSIGNMENTS}{node}/{name}"


def status_key(node: str, name: str) -> str:
    return f"{STATUS}{node}/{name}"


def placement_key(prefix: str, stack: str, service: str) -> str:
    return f"{prefix}{stack}/{service}"


def _check_peer(node: str) -> None:
    """A node certificate speaks only for its own node (admins and control planes for any)."""
    peer = request.headers.get("x-carte-peer", "")
    if peer.startswith("node/") and peer != f"node/{node}":
        raise Refused(f'node "{peer[5:]}" may not speak for node "{node}"')


def asking_node() -> str:
    """The ``?node=NAME`` of a request, checked against the peer's certificate."""
    node = request.args.get("node", "")
    if not node:
        raise InvalidArgument(f"{request.method} {request.path} needs ?node=NAME")
    _check_peer(node)
    return node


async def assignment_lines(store: Store, node: str) -> AsyncIterator[bytes]:
    """The NDJSON lines of one node's assignments (see the module docstring)."""
    prefix = f"{ASSIGNMENTS}{node}/"
    send, receive = trio.open_memory_channel[bytes](16)

    async def pump() -> None:
        async with follow(store, prefix) as changes:
            async for item in changes:
                if isinstance(item, Resync):
                    resync = [entry.decode(Assignment) for entry in item.entries]
                    line = {"resync": resync, "revision": item.revision}
                elif isinstance(item, Change) and item.value is None:
                    line = {"delete": item.key.removeprefix(prefix)}
                else:
                    assert isinstance(item, Change) and item.value is not None
                    line = {"put": msgspec.json.decode(item.value, type=Assignment)}
                await send.send(_encoder.encode(line) + b"\n")

    async def ping() -> None:
        while True:
            await trio.sleep(PING)
            await send.send(b'{"ping": true}\n')

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        nursery.start_soon(ping)
        try:
            async for line in receive:
                yield line
        finally:
            nursery.cancel_scope.cancel()


async def serve_assignments(handler: SchedulerHandler) -> Response:
    node = asking_node()
    handler.control_store()
    return Response(assignment_lines(handler.ctx.store, node), content_type="application/x-ndjson")


async def serve_status(handler: SchedulerHandler) -> Response:
    data: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
    try:
        statuses = _statuses.decode(data or b"[]")
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise InvalidArgument(f"body of {request.path}: {error}") from None
    for status in statuses:
        _check_peer(status.node)
    written = await write_statuses(handler.control_store(), statuses)
    return Response(_encoder.encode({"written": written}), content_type="application/json")


async def write_statuses(store: Store, statuses: list[ReplicaStatus]) -> int:
    """Write each status whose replica is still assigned and which changed; the count."""
    written = 0
    for status in statuses:
        if await store.get(assignment_key(status.node, status.name)) is None:
            continue  # unassigned meanwhile: the scheduler deleted its status already
        key = status_key(status.node, status.name)
        entry = await store.get(key)
        if entry is not None and _same(entry.decode(ReplicaStatus), status):
            continue
        await store.put(key, status)
        written += 1
    return written


def _same(a: ReplicaStatus, b: ReplicaStatus) -> bool:
    return msgspec.structs.replace(a, updated="") == msgspec.structs.replace(b, updated="")


async def serve_image(handler: SchedulerHandler) -> Response:
    name = request.args.get("name", "")
    if not name:
        raise InvalidArgument("GET /v1/cluster/image needs ?name=IMAGE")
    handler.control_store()
    scratch = handler.ctx.run_root / "cluster-images"
    archive = await trio.to_thread.run_sync(_save_image, handler.ctx.root, name, scratch)
    return Response(_file_chunks(archive), content_type="application/x-tar")


def _save_image(root: Path, name: str, scratch: Path) -> Path:
    """The image as an OCI archive in a file under ``scratch`` (ImageNotFound: none here)."""
    store = ImageStore(root)
    store.get(name)
    scratch.mkdir(parents=True, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix="image-", suffix=".tar", dir=scratch)
    try:
        with os.fdopen(handle, "wb") as out:
            save(store, [name], out, "oci")
    except BaseException:
        os.unlink(path)
        raise
    return Path(path)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """``path``'s bytes, then the file is removed (also when the client leaves early)."""
    try:
        handle = await trio.open_file(path, "rb")
        async with handle:
            while chunk := await handle.read(_CHUNK):
                yield chunk
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))


async def serve_files(handler: SchedulerHandler) -> Response:
    node = asking_node()
    name = request.args.get("name", "")
    entry = await handler.control_store().get(assignment_key(node, name))
    if entry is None:
        raise NotFound(f'no replica "{name}" is assigned to node "{node}"')
    assignment = entry.decode(Assignment)
    files = await handler.ctx.bus.request(
        ReadServiceFiles(stack=assignment.stack, service=assignment.service)
    )
    return Response(_encoder.encode(files), content_type="application/json")


SCHEDULER_ROUTES = (
    Route("GET", "/v1/cluster/assignments", serve_assignments, streams=True),
    Route("POST", "/v1/cluster/status", serve_status),
    Route("GET", "/v1/cluster/image", serve_image, streams=True),
    Route("GET", "/v1/cluster/files", serve_files),
)

__all__ = [
    "ASSIGNMENTS",
    "PENDING",
    "SCHEDULER_ROUTES",
    "SERVICES",
    "STATUS",
    "assignment_key",
    "placement_key",
    "status_key",
    "write_statuses",
]
