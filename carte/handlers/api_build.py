"""`POST /v1/build?options=<BuildRequest JSON>`: the body is the build context as a tar (the
client already left out what .dockerignore excludes); the answer streams NDJSON lines:
`{"stream": "#3 [2/5] RUN ..."}` per progress line, then `{"result": BuildResult}` or
`{"error": {"code", "message"}}`.

The Dockerfile travels inside the tar as `DOCKERFILE_ENTRY` (so `-f` may name a file outside
the context, as with Docker). The context is unpacked under ROOT/build-contexts/<id> with
the safe tar filter (no absolute paths, no `..`, no links out, no devices) and removed when
the build ends, whatever happened. A client that disconnects cancels the build.
"""

from __future__ import annotations

import shutil
import tarfile
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

DOCKERFILE_ENTRY = ".carte-build-dockerfile"
NDJSON = "application/x-ndjson"
# Build contexts are bigger than Quart's 16 MB default body limit.
MAX_CONTEXT_BYTES = 16 << 30
_WRITE_BATCH = 8 << 20

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(BuildRequest)


def add_build_routes(app: QuartTrio, ctx: HandlerContext) -> None:
    """Register POST /v1/build on `app`."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTEXT_BYTES

    @app.post("/v1/build")
    async def build_route() -> Response:
        try:
            options = _request_decoder.decode(request.args.get("options", "{}").encode())
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise InvalidArgument(f"build options: {error}") from None
        workdir = Path(tempfile.mkdtemp(dir=_contexts_dir(ctx), prefix="ctx-"))
        try:
            archive = workdir / "context.tar"
            with archive.open("wb") as out:
                pending = bytearray()
                async for chunk in request.body:
                    pending += chunk
                    if len(pending) >= _WRITE_BATCH:  # one thread hop per batch, not per chunk
                        await trio.to_thread.run_sync(out.write, bytes(pending))
                        pending.clear()
                await trio.to_thread.run_sync(out.write, bytes(pending))
            context = workdir / "context"
            dockerfile = await trio.to_thread.run_sync(_unpack, archive, context, options)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return Response(_stream(ctx, options, context, dockerfile, workdir), content_type=NDJSON)


def _contexts_dir(ctx: HandlerContext) -> Path:
    directory = ctx.root / "build-contexts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _unpack(archive: Path, context: Path, options: BuildRequest) -> str:
    """Unpack the context tar; return the Dockerfile text. Raises `InvalidArgument`."""
    context.mkdir()
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(context, filter=_keep_owner_filter)
    except (tarfile.TarError, OSError) as error:
        raise InvalidArgument(f"the build context is not a readable tar archive: {error}") from None
    archive.unlink()
    entry = context / DOCKERFILE_ENTRY
    try:
        if entry.is_file():
            text = entry.read_text()
            entry.unlink()
            return text
        return (context / options.dockerfile).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgument(
            f"cannot read the Dockerfile {options.dockerfile}: {error}; give its path with -f"
        ) from None


def _keep_owner_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    safe = tarfile.data_filter(member, path)
    if safe is None:
        return None
    return safe.replace(uid=member.uid, gid=member.gid, mode=member.mode, deep=False)


async def _stream(
    ctx: HandlerContext, options: BuildRequest, context: Path, dockerfile: str, workdir: Path
) -> AsyncIterator[bytes]:
    send, receive = trio.open_memory_channel[bytes](64)
    cancelled = threading.Event()

    def progress(line: str) -> None:
        if cancelled.is_set():
            return
        try:
            trio.from_thread.run(send.send, _encoder.encode({"stream": line}) + b"\n")
        except (trio.BrokenResourceError, trio.RunFinishedError, trio.Cancelled):
            cancelled.set()

    async def produce() -> None:
        async with send:
            try:
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
            # The context goes before the last line, so a client that saw it sees no leftovers.
            await trio.to_thread.run_sync(shutil.rmtree, workdir, True)
            await send.send(line + b"\n")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with receive:
                async for line in receive:
                    yield line
    finally:
        cancelled.set()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(shutil.rmtree, workdir, True)
