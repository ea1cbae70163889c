"""`POST /v1/build?options=<BuildRequest JSON>`: the body is the build context as a tar (the
client already left out what .dockerignore excludes); the answer streams NDJSON lines:
`{"stream": "#3 [2/5] RUN ..."}` per progress line, then `{"result": BuildResult}` or
`{"error": {"code", "message"}}`.

The Dockerfile travels inside the tar as its own entry (so `-f` may name a file outside the
context, as with Docker). With a `context_key` (the client's context directory), the context
is synced into a kept directory ROOT/build-contexts/session-<hash>, rewriting only what
changed (one build per session at a time); without one it goes to a temporary directory. The
upload itself is removed when the build ends, whatever happened. A client that disconnects
cancels the build.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from carte.api.errors import CarteError, InvalidArgument
from carte.api.images import BuildRequest
from carte.api.system import ErrorBody, ErrorDetail
from carte.engine import HandlerContext
from carte.handlers.build import run_build
from carte.image.build_context import ContextError, sync_context

NDJSON = "application/x-ndjson"
# Build contexts are bigger than Quart's 16 MB default body limit.
MAX_CONTEXT_BYTES = 16 << 30
_WRITE_BATCH = 8 << 20
KEPT_SESSIONS = 16

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(BuildRequest)


def add_build_routes(app: QuartTrio, ctx: HandlerContext) -> None:
    """Register POST /v1/build on `app`."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTEXT_BYTES
    sessions: dict[str, trio.Lock] = {}

    @app.post("/v1/build")
    async def build_route() -> Response:
        try:
            options = _request_decoder.decode(request.args.get("options", "{}").encode())
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise InvalidArgument(f"build options: {error}") from None
        contexts = await trio.to_thread.run_sync(_contexts_dir, ctx)
        upload = Path(await trio.to_thread.run_sync(tempfile.mkdtemp, "", "upload-", contexts))
        try:
            await _receive(upload / "context.tar")
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, upload, True)
            raise
        context = upload / "context"
        lock = trio.Lock()  # an upload without a session shares nothing
        if options.context_key:
            key = hashlib.sha256(options.context_key.encode()).hexdigest()[:32]
            lock = sessions.setdefault(key, lock)
            context = contexts / f"session-{key}"
        return Response(_stream(ctx, options, context, upload, lock), content_type=NDJSON)


async def _receive(archive: Path) -> None:
    with archive.open("wb") as out:
        pending = bytearray()
        async for chunk in request.body:
            pending += chunk
            if len(pending) >= _WRITE_BATCH:  # one thread hop per batch, not per chunk
                await trio.to_thread.run_sync(out.write, bytes(pending))
                pending.clear()
        await trio.to_thread.run_sync(out.write, bytes(pending))


def _contexts_dir(ctx: HandlerContext) -> Path:
    directory = ctx.root / "build-contexts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _forget_old_sessions(contexts: Path, current: Path) -> None:
    """Keep the most recently used `KEPT_SESSIONS` contexts; drop the others."""
    sessions = [p for p in contexts.glob("session-*") if p != current]
    sessions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in sessions[KEPT_SESSIONS - 1 :]:
        shutil.rmtree(stale, ignore_errors=True)


def _unpack(archive: Path, context: Path, options: BuildRequest) -> str:
    """Sync the context tar into `context`; return the Dockerfile text. Raises `InvalidArgument`."""
    if context.name.startswith("session-"):
        _forget_old_sessions(context.parent, context)
    try:
        text = sync_context(archive, context)
    except ContextError as error:
        raise InvalidArgument(str(error)) from None
    archive.unlink()
    if text is not None:
        return text
    try:
        return (context / options.dockerfile).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgument(
            f"cannot read the Dockerfile {options.dockerfile}: {error}; give its path with -f"
        ) from None


async def _stream(
    ctx: HandlerContext, options: BuildRequest, context: Path, upload: Path, lock: trio.Lock
) -> AsyncIterator[bytes]:
    # The build thread never waits for the client: its lines go through an unbounded queue
    # that this task drains in batches (one thread hop per batch, not per line).
    lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    cancelled = threading.Event()

    def progress(line: str) -> None:
        lines.put(_encoder.encode({"stream": line}) + b"\n")

    async def produce() -> None:
        async with lock:
            try:
                archive = upload / "context.tar"
                dockerfile = await trio.to_thread.run_sync(_unpack, archive, context, options)
                result = await run_build(ctx, options, context, dockerfile, progress, cancelled)
                line = _encoder.encode({"result": result})
            except CarteError as error:
                body = ErrorBody(error=ErrorDetail(code=error.code, message=error.message))
                line = _encoder.encode(body)
            except Exception as error:
                ctx.log.exception("build failed unexpectedly")
                message = f"{type(error).__name__}: {error}; the daemon log has details"
                line = _encoder.encode(
                    ErrorBody(error=ErrorDetail(code="internal", message=message))
                )
            # The upload goes before the last line, so a client that saw it sees no leftovers.
            await trio.to_thread.run_sync(shutil.rmtree, upload, True)
            lines.put(line + b"\n")
            lines.put(None)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            finished = False
            try:
                while not finished:
                    batch = [await trio.to_thread.run_sync(lines.get, abandon_on_cancel=True)]
                    while not lines.empty():
                        batch.append(lines.get_nowait())
                    finished = None in batch
                    yield b"".join(item for item in batch if item is not None)
            except BaseException:
                cancelled.set()  # the client went away: stop the build at its next step
                raise
    finally:
        cancelled.set()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(shutil.rmtree, upload, True)
