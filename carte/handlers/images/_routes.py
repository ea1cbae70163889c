"""Image streaming routes: the rootfs import upload (handler "images"), pull/push progress
(handler "registry"), save download, load upload and container export (handler "archives").
Each runs with its handler's running instance (its context, logger and transfer limiter);
while that handler is disabled, skipped or down the http handler answers 503 naming it.

- ``POST /v1/images/import?name=NAME[:TAG]``: the body is a root filesystem tar (plain, gzip or
  zstd), stored under ROOT/ingest while it arrives, then imported (`ImportImage`); the answer
  is ``{"result": ImageSummary}``. `carte import - NAME` uses it.
- ``POST /v1/images/pull`` (body `PullImage`) and ``POST /v1/images/push`` (body `PushImage`)
  stream NDJSON: ``{"progress": {"action", "digest", "done", "total"}}`` lines, then
  ``{"result": ...}`` or ``{"error": {"code", "message"}}``.
- ``GET /v1/images/save?name=N&name=M&format=oci|docker``: the archive (application/x-tar).
  Unknown images are a 404 before any byte is sent.
- ``POST /v1/images/load`` with an archive body: ``{"result": [LoadedImage]}``. The upload is
  spooled under ROOT/load-uploads and removed whatever happens.
- ``GET /v1/containers/<ref>/export``: the container's filesystem as a tar.

A download runs its writer in a worker thread that hands chunks over a bounded queue, so a
slow client slows the writer; a client that goes away stops it at its next write. An error
after the first byte cuts the connection off (the client sees a short tar).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import msgspec
import trio
from quart import Response, request

from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import ImageLoaded, ImportImage, PullImage, PushImage, ResolveContainer
from carte.api.system import ErrorBody, ErrorDetail
from carte.engine.handler import Route
from carte.engine.log import describe_error, traceback_text
from carte.image import ImageStore, Progress

if TYPE_CHECKING:
    from carte.handlers.images._archives import ArchivesHandler
    from carte.handlers.images._handler import ImagesHandler
    from carte.handlers.images._registry import RegistryHandler

NDJSON = "application/x-ndjson"
TAR = "application/x-tar"
_CHUNK = 1 << 20
_QUEUED_CHUNKS = 8
_POLL = 0.2

BodyT = TypeVar("BodyT")
_encoder = msgspec.json.Encoder()
_pull_decoder = msgspec.json.Decoder(PullImage)
_push_decoder = msgspec.json.Decoder(PushImage)


class _ChunkPipe:
    """A file-like writer for a worker thread whose chunks an async generator yields."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue(_QUEUED_CHUNKS)
        self.stopped = threading.Event()
        self._pending = bytearray()

    def write(self, data: bytes) -> int:
        self._pending += data
        if len(self._pending) >= _CHUNK:
            self._put(bytes(self._pending))
            self._pending.clear()
        return len(data)

    def flush(self) -> None:
        return None

    def finish(self) -> None:
        if self._pending:
            self._put(bytes(self._pending))
        self._put(None)

    def _put(self, item: bytes | None) -> None:
        while True:
            if self.stopped.is_set():
                raise OSError("the client went away")
            try:
                self.chunks.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def get(self) -> bytes | None:
        while not self.stopped.is_set():
            try:
                return self.chunks.get(timeout=_POLL)
            except queue.Empty:
                continue
        return None


async def _download(
    work: Callable[[BinaryIO], None], limiter: trio.CapacityLimiter
) -> AsyncIterator[bytes]:
    pipe = _ChunkPipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            work(pipe)  # type: ignore[arg-type]
            pipe.finish()
        except BaseException as error:
            failure.append(error)
            pipe.stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.to_thread.run_sync(produce, limiter=limiter))
        try:
            while (chunk := await trio.to_thread.run_sync(pipe.get)) is not None:
                yield chunk
        finally:
            pipe.stopped.set()  # before the nursery waits for the writer: it stops writing
    if failure:
        raise failure[0]


def error_line(error: Exception, log: logging.Logger, what: str) -> bytes:
    """The last NDJSON line of a stream that failed; an unexpected error is logged with its
    traceback (the client gets one line)."""
    if isinstance(error, CarteError):
        detail = ErrorDetail(code=error.code, message=error.message)
    else:
        log.error(
            "%s failed unexpectedly",
            what,
            extra={"error": describe_error(error), "traceback": traceback_text(error)},
        )
        message = f"{type(error).__name__}: {error}; the daemon log has details"
        detail = ErrorDetail(code="internal", message=message)
    return _encoder.encode(ErrorBody(error=detail)) + b"\n"


async def _progress_stream(
    log: logging.Logger,
    what: str,
    run: Callable[[Callable[[Progress], None]], Awaitable[object]],
) -> AsyncIterator[bytes]:
    # The transfer thread never waits for the client: lines go through an unbounded queue.
    lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def progress(event: Progress) -> None:
        lines.put(_encoder.encode({"progress": event}) + b"\n")

    async def produce() -> None:
        try:
            result = await run(progress)
            lines.put(_encoder.encode({"result": result}) + b"\n")
        except Exception as error:
            lines.put(error_line(error, log, what))
        lines.put(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for chunk in drain(lines):
            yield chunk


async def drain(lines: queue.SimpleQueue[bytes | None]) -> AsyncIterator[bytes]:
    """What a worker thread puts in `lines`, in batches (one thread hop per batch, not per
    line), until it puts None."""
    finished = False
    while not finished:
        batch = [await trio.to_thread.run_sync(lines.get, abandon_on_cancel=True)]
        while not lines.empty():
            batch.append(lines.get_nowait())
        finished = None in batch
        yield b"".join(item for item in batch if item is not None)


async def _body_of(decoder: msgspec.json.Decoder[BodyT], name: str) -> BodyT:
    data = await request.get_data(as_text=False)
    try:
        return decoder.decode(data or b"{}")
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise InvalidArgument(f"body of {name}: {error}") from None


async def import_upload(images: ImagesHandler) -> Response:
    """Import an uploaded root filesystem tar as an image (carte import - NAME)."""
    name = request.args.get("name", "")
    ingest = images.ctx.root / "ingest"
    await trio.Path(ingest).mkdir(parents=True, exist_ok=True)
    upload = ingest / f"import-{os.urandom(8).hex()}.tar"
    try:
        async with await trio.open_file(upload, "wb") as file:
            async for chunk in request.body:
                await file.write(chunk)
        result = await images.ctx.bus.request(ImportImage(source=str(upload), name=name))
    finally:
        with trio.CancelScope(shield=True):
            await trio.Path(upload).unlink(missing_ok=True)
    return Response(_encoder.encode({"result": result}), content_type="application/json")


async def pull(registry: RegistryHandler) -> Response:
    """Pull an image, streaming progress as NDJSON (carte pull)."""
    command = await _body_of(_pull_decoder, "pull")
    stream = _progress_stream(registry.ctx.log, "pull", lambda p: registry.pull_image(command, p))
    return Response(stream, content_type=NDJSON)


async def push(registry: RegistryHandler) -> Response:
    """Push an image, streaming progress as NDJSON (carte push)."""
    command = await _body_of(_push_decoder, "push")
    stream = _progress_stream(registry.ctx.log, "push", lambda p: registry.push_image(command, p))
    return Response(stream, content_type=NDJSON)


async def save(archives: ArchivesHandler) -> Response:
    """Images as an OCI archive or docker-archive (carte save)."""
    from carte.handlers.images._archives import save_images

    names = request.args.getlist("name")
    fmt = request.args.get("format", "oci")
    if not names:
        raise InvalidArgument("save needs at least one image: ?name=IMAGE")
    store = await trio.to_thread.run_sync(ImageStore, archives.ctx.root)
    for name in names:  # unknown images fail here, before any byte is sent
        await trio.to_thread.run_sync(store.get, name)
    stream = _download(lambda out: save_images(store, names, fmt, out), archives.transfers)
    return Response(stream, content_type=TAR)


async def load(archives: ArchivesHandler) -> Response:
    """Store the images of an uploaded archive (carte load)."""
    from carte.handlers.images._archives import load_images

    ctx = archives.ctx
    uploads = ctx.root / "load-uploads"
    await trio.to_thread.run_sync(lambda: uploads.mkdir(parents=True, exist_ok=True))
    directory = Path(await trio.to_thread.run_sync(tempfile.mkdtemp, "", "load-", uploads))
    try:
        archive = directory / "archive.tar"
        with archive.open("wb") as out:
            pending = bytearray()
            async for chunk in request.body:
                pending += chunk
                if len(pending) >= 8 * _CHUNK:
                    await trio.to_thread.run_sync(out.write, bytes(pending))
                    pending.clear()
            await trio.to_thread.run_sync(out.write, bytes(pending))
        store = await trio.to_thread.run_sync(ImageStore, ctx.root)
        loaded = await trio.to_thread.run_sync(
            load_images, store, archive, limiter=archives.transfers
        )
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(shutil.rmtree, directory, True)
    for image in loaded:
        await ctx.bus.publish(ImageLoaded(id=image.id, names=image.names))
    return Response(_encoder.encode({"result": loaded}), content_type="application/json")


async def export(archives: ArchivesHandler, ref: str) -> Response:
    """A container's flattened filesystem as a tar (carte export)."""
    from carte.handlers.images._archives import export_container

    location = await archives.ctx.bus.request(ResolveContainer(ref=ref))
    scratch = archives.ctx.run_root / "export"
    stream = _download(lambda out: export_container(location, scratch, out), archives.transfers)
    return Response(stream, content_type=TAR)


IMAGE_ROUTES = (Route("POST", "/v1/images/import", import_upload, upload=True),)
REGISTRY_ROUTES = (
    Route("POST", "/v1/images/pull", pull, streams=True),
    Route("POST", "/v1/images/push", push, streams=True),
)
ARCHIVE_ROUTES = (
    Route("GET", "/v1/images/save", save, streams=True),
    Route("POST", "/v1/images/load", load, upload=True),
    Route("GET", "/v1/containers/<ref>/export", export, streams=True),
)
