"""The build routes. A client uploads its context in two requests, sending only what changed:

* `POST /v1/build/context?key=K` with the JSON listing of the context (`ContextEntry`s)
  answers `{"needed": [indexes]}`: the files the daemon's kept copy for key K lacks.
* `POST /v1/build?options=<BuildRequest JSON>` with the upload (`carte.build._context`:
  a JSON line, then the needed files' bytes) syncs the kept copy ROOT/build-contexts/
  session-<hash> (one build per copy at a time; without a `context_key` a temporary
  directory is used) and streams NDJSON: `{"stream": "#3 [2/5] RUN ..."}` per progress line,
  then `{"result": BuildResult}` or `{"error": {"code", "message"}}`.

The upload file is removed when the build ends, whatever happened; a client that disconnects
cancels the build. At most `KEPT_SESSIONS` kept copies stay; `carte builder prune` drops all.
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
from carte.build import (
    ContextEntry,
    ContextError,
    apply_upload,
    decode_upload_header,
    manifest_path,
    needed_files,
)
from carte.engine import HandlerContext
from carte.handlers.images._build import run_build

NDJSON = "application/x-ndjson"
# Build contexts are bigger than Quart's 16 MB default body limit.
MAX_CONTEXT_BYTES = 16 << 30
_WRITE_BATCH = 8 << 20
KEPT_SESSIONS = 16

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(BuildRequest)
_entries_decoder = msgspec.json.Decoder(list[ContextEntry])


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
            await _receive(upload / "context.upload")
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, upload, True)
            raise
        context = upload / "context"
        lock = trio.Lock()  # an upload without a session shares nothing
        if options.context_key:
            key = _session_id(options.context_key)
            lock = sessions.setdefault(key, lock)
            context = contexts / f"session-{key}"
        return Response(_stream(ctx, options, context, upload, lock), content_type=NDJSON)

    @app.post("/v1/build/context")
    async def context_needs() -> Response:
        """Which files of the listed context the daemon lacks (the first half of an upload)."""
        key = request.args.get("key", "")
        body = await request.get_data(as_text=False)
        try:
            entries = _entries_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise InvalidArgument(f"build context listing: {error}") from None
        contexts = await trio.to_thread.run_sync(_contexts_dir, ctx)
        target = contexts / f"session-{_session_id(key)}"
        needed = await trio.to_thread.run_sync(needed_files, target, entries)
        return Response(_encoder.encode({"needed": needed}), content_type="application/json")


async def _receive(archive: Path) -> None:
    with archive.open("wb") as out:
        pending = bytearray()
        async for chunk in request.body:
            pending += chunk
            if len(pending) >= _WRITE_BATCH:  # one thread hop per batch, not per chunk
                await trio.to_thread.run_sync(out.write, bytes(pending))
                pending.clear()
        await trio.to_thread.run_sync(out.write, bytes(pending))


def _session_id(context_key: str) -> str:
    return hashlib.sha256(context_key.encode()).hexdigest()[:32]


def _contexts_dir(ctx: HandlerContext) -> Path:
    directory = ctx.root / "build-contexts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _forget_old_sessions(contexts: Path, current: Path) -> None:
    """Keep the most recently used `KEPT_SESSIONS` contexts; drop the others."""
    sessions = [p for p in contexts.glob("session-*") if p.is_dir() and p != current]
    sessions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in sessions[KEPT_SESSIONS - 1 :]:
        manifest_path(stale).unlink(missing_ok=True)
        shutil.rmtree(stale, ignore_errors=True)


def _unpack(upload: Path, context: Path, options: BuildRequest) -> str:
    """Bring the uploaded context into `context`; return the Dockerfile text.

    Raises `InvalidArgument` for an unusable upload or Dockerfile."""
    archive = upload / "context.upload"
    with archive.open("rb") as stream:
        header = decode_upload_header(stream.readline())
        try:
            apply_upload(context, header, stream.read)
        except ContextError as error:
            raise InvalidArgument(str(error)) from None
        except OSError as error:
            raise InvalidArgument(f"cannot store the build context: {error}") from None
    archive.unlink()
    if header.dockerfile:
        return header.dockerfile
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
                dockerfile = await trio.to_thread.run_sync(_unpack, upload, context, options)
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
