"""Image streaming routes: pull/push progress, save download, load upload, container export.

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

import queue
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import ImageLoaded, PullImage, PushImage, ResolveContainer
from carte.api.system import ErrorBody, ErrorDetail
from carte.engine import HandlerContext
from carte.handlers.images._archives import export_container, load_images, save_images
from carte.handlers.images._registry import pull_image, push_image
from carte.image import ImageStore, Progress

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


def _error_line(error: Exception, ctx: HandlerContext, what: str) -> bytes:
    if isinstance(error, CarteError):
        detail = ErrorDetail(code=error.code, message=error.message)
    else:
        ctx.log.exception("%s failed unexpectedly", what)
        message = f"{type(error).__name__}: {error}; the daemon log has details"
        detail = ErrorDetail(code="internal", message=message)
    return _encoder.encode(ErrorBody(error=detail)) + b"\n"


async def _progress_stream(
    ctx: HandlerContext,
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
            lines.put(_error_line(error, ctx, what))
        lines.put(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        finished = False
        while not finished:
            batch = [await trio.to_thread.run_sync(lines.get, abandon_on_cancel=True)]
            while not lines.empty():
                batch.append(lines.get_nowait())
            finished = None in batch
            yield b"".join(item for item in batch if item is not None)


def register_image_routes(app: QuartTrio, ctx: HandlerContext) -> None:
    """Add the image streaming routes to the API application."""
    limiter = trio.CapacityLimiter(4)

    async def body_of(decoder: msgspec.json.Decoder[BodyT], name: str) -> BodyT:
        data = await request.get_data(as_text=False)
        try:
            return decoder.decode(data or b"{}")
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise InvalidArgument(f"body of {name}: {error}") from None

    @app.post("/v1/images/pull")
    async def pull_route() -> Response:
        """Pull an image, streaming progress as NDJSON (carte pull)."""
        command = await body_of(_pull_decoder, "pull")
        stream = _progress_stream(ctx, "pull", lambda p: pull_image(ctx, command, p))
        return Response(stream, content_type=NDJSON)

    @app.post("/v1/images/push")
    async def push_route() -> Response:
        """Push an image, streaming progress as NDJSON (carte push)."""
        command = await body_of(_push_decoder, "push")
        stream = _progress_stream(ctx, "push", lambda p: push_image(ctx, command, p))
        return Response(stream, content_type=NDJSON)

    @app.get("/v1/images/save")
    async def save_route() -> Response:
        """Images as an OCI archive or docker-archive (carte save)."""
        names = request.args.getlist("name")
        fmt = request.args.get("format", "oci")
        if not names:
            raise InvalidArgument("save needs at least one image: ?name=IMAGE")
        store = await trio.to_thread.run_sync(ImageStore, ctx.root)
        for name in names:  # unknown images fail here, before any byte is sent
            await trio.to_thread.run_sync(store.get, name)
        stream = _download(lambda out: save_images(store, names, fmt, out), limiter)
        return Response(stream, content_type=TAR)

    @app.post("/v1/images/load")
    async def load_route() -> Response:
        """Store the images of an uploaded archive (carte load)."""
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
            loaded = await trio.to_thread.run_sync(load_images, store, archive, limiter=limiter)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, directory, True)
        for image in loaded:
            await ctx.bus.publish(ImageLoaded(id=image.id, names=image.names))
        return Response(_encoder.encode({"result": loaded}), content_type="application/json")

    @app.get("/v1/containers/<ref>/export")
    async def export_route(ref: str) -> Response:
        """A container's flattened filesystem as a tar (carte export)."""
        location = await ctx.bus.request(ResolveContainer(ref=ref))
        scratch = ctx.run_root / "export"
        stream = _download(lambda out: export_container(location, scratch, out), limiter)
        return Response(stream, content_type=TAR)
