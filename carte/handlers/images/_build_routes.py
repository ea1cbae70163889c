"""The build routes. A client uploads its context in two requests, sending only what changed:

* `POST /v1/build/context?key=K` with the JSON listing of the context (`ContextEntry`s)
  answers `{"needed": [indexes]}`: the files the daemon's kept copy for key K lacks.
* `POST /v1/build?options=<BuildRequest JSON>` with the upload (`carte.build._context`:
  a JSON line, then the needed files' bytes) syncs the kept copy ROOT/build-contexts/
  session-<hash> (one build per copy at a time; without a `context_key` a temporary
  directory is used) and streams NDJSON: `{"stream": "#3 [2/5] RUN ..."}` per progress line,
  then `{"result": BuildResult}` or `{"error": {"code", "message"}}`.

Both run with the "build" handler's running instance (its context, logger, build limiter and
session locks). The upload file is removed when the build ends, whatever happened; a client
that disconnects cancels the build. After each build with a session, at most `KEPT_SESSIONS`
kept copies stay (the least recently used ones that no build holds go); `carte builder prune`
drops all. The listing is decoded in a worker thread and capped at `MAX_LISTING_BYTES`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Response, request

from carte.api.errors import InvalidArgument
from carte.api.images import BuildRequest
from carte.build import (
    BuildInputs,
    ContextEntry,
    ContextError,
    apply_upload,
    decode_upload_header,
    manifest_path,
    needed_files,
)
from carte.engine import HandlerContext
from carte.engine.handler import Route
from carte.handlers.images._routes import drain, error_line

if TYPE_CHECKING:
    from carte.handlers.images._build import BuildHandler

NDJSON = "application/x-ndjson"
_WRITE_BATCH = 8 << 20
KEPT_SESSIONS = 16
# A listing is one JSON entry per file of the context: ~100 bytes each.
MAX_LISTING_BYTES = 64 << 20

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(BuildRequest)
_entries_decoder = msgspec.json.Decoder(list[ContextEntry])


async def build(builder: BuildHandler) -> Response:
    """Build an image from an uploaded context, streaming progress as NDJSON (carte build)."""
    ctx = builder.ctx
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
    kept: Path | None = None
    if options.context_key:
        key = _session_id(options.context_key)
        lock = builder.sessions.setdefault(key, lock)
        context = kept = contexts / f"session-{key}"
    stream = _stream(builder, options, context, upload, lock, kept)
    return Response(stream, content_type=NDJSON)


async def context_needs(builder: BuildHandler) -> Response:
    """Which files of the listed context the daemon lacks (the first half of an upload)."""
    key = request.args.get("key", "")
    body = bytearray()
    async for chunk in request.body:
        body += chunk
        if len(body) > MAX_LISTING_BYTES:
            raise InvalidArgument(
                f"build context listing is larger than {MAX_LISTING_BYTES >> 20} MiB; "
                "leave files out with a .dockerignore"
            )
    entries = await trio.to_thread.run_sync(_decode_listing, bytes(body))
    contexts = await trio.to_thread.run_sync(_contexts_dir, builder.ctx)
    target = contexts / f"session-{_session_id(key)}"
    needed = await trio.to_thread.run_sync(needed_files, target, entries)
    return Response(_encoder.encode({"needed": needed}), content_type="application/json")


BUILD_ROUTES = (
    Route("POST", "/v1/build", build, upload=True, streams=True),
    Route("POST", "/v1/build/context", context_needs, upload=True),
)


def _decode_listing(body: bytes) -> list[ContextEntry]:
    try:
        return _entries_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise InvalidArgument(f"build context listing: {error}") from None


async def _receive(archive: Path) -> None:
    with archive.open("wb") as out:
        pending = bytearray()
        async for chunk in request.body:
            pending += chunk
            if len(pending) >= _WRITE_BATCH:  # one thread hop per batch, not per chunk
                await trio.to_thread.run_sync(out.write, bytes(pending))
                pending.clear()
        await trio.to_thread.run_sync(out.write, bytes(pending))


def _busy_sessions(builder: BuildHandler, contexts: Path) -> set[Path]:
    return {contexts / f"session-{key}" for key, lock in builder.sessions.items() if lock.locked()}


def _session_id(context_key: str) -> str:
    return hashlib.sha256(context_key.encode()).hexdigest()[:32]


def _contexts_dir(ctx: HandlerContext) -> Path:
    directory = ctx.root / "build-contexts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def forget_old_sessions(contexts: Path, current: Path, busy: set[Path]) -> None:
    """Keep `current` and the most recently used others, `KEPT_SESSIONS` in all; drop the
    rest, except copies a running build holds (`busy`)."""
    if current.is_dir():
        os.utime(current)  # used now, whether or not its files changed
    sessions = [p for p in contexts.glob("session-*") if p.is_dir() and p != current]
    sessions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in sessions[KEPT_SESSIONS - 1 :]:
        if stale in busy:
            continue
        manifest_path(stale).unlink(missing_ok=True)
        shutil.rmtree(stale, ignore_errors=True)


def _unpack(upload: Path, context: Path, options: BuildRequest) -> tuple[str, BuildInputs]:
    """Bring the uploaded context into `context`; return the Dockerfile text and the secrets.

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
    try:
        secrets = header.inputs()
    except ContextError as error:
        raise InvalidArgument(str(error)) from None
    if header.dockerfile:
        return header.dockerfile, secrets
    try:
        return (context / options.dockerfile).read_text(), secrets
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgument(
            f"cannot read the Dockerfile {options.dockerfile}: {error}; give its path with -f"
        ) from None


async def _stream(
    builder: BuildHandler,
    options: BuildRequest,
    context: Path,
    upload: Path,
    lock: trio.Lock,
    kept: Path | None,
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
                unpacked = await trio.to_thread.run_sync(_unpack, upload, context, options)
                dockerfile, secrets = unpacked
                result = await builder.run_build(
                    options, context, dockerfile, progress, cancelled, secrets
                )
                line = _encoder.encode({"result": result}) + b"\n"
            except Exception as error:
                line = error_line(error, builder.ctx.log, "build")
            # The upload goes before the last line, so a client that saw it sees no leftovers.
            await trio.to_thread.run_sync(shutil.rmtree, upload, True)
            if kept is not None:
                await trio.to_thread.run_sync(
                    forget_old_sessions, kept.parent, kept, _busy_sessions(builder, kept.parent)
                )
            lines.put(line)
            lines.put(None)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            try:
                async for chunk in drain(lines):
                    yield chunk
            except BaseException:
                cancelled.set()  # the client went away: stop the build at its next step
                raise
    finally:
        cancelled.set()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(shutil.rmtree, upload, True)
