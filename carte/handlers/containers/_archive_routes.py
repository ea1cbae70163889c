"""`carte cp` routes: a container's files as a tar stream, both ways.

- ``GET /v1/containers/<ref>/archive?path=P``: a tar of P (not followed if a symlink), its
  top-level entry named after P's last component (application/x-tar).
- ``PUT /v1/containers/<ref>/archive?path=P`` with a tar body: unpacked into P when P is a
  directory, else as P itself (see `container_archive.extract_archive`).

Both work for running and stopped containers; paths never resolve outside the container's
root. The tar is spooled to a temporary file first, so an error is a proper status and one
line, never a half-sent stream. Both run with the containers handler's running instance and
its copy limiter (`COPY_ROUTES`); the PUT body is an upload (its size cap applies).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING

import trio
from quart import Response, request

from carte.api.containers import ContainerLocation
from carte.api.errors import InvalidArgument
from carte.api.events import ResolveContainer
from carte.engine.handler import Route
from carte.handlers.containers._archive import container_root, extract_archive, write_archive

if TYPE_CHECKING:
    from carte.handlers.containers._handler import ContainersHandler

_CHUNK = 1 << 16
_IN_MEMORY = 8 << 20


async def _located(containers: ContainersHandler, ref: str) -> tuple[ContainerLocation, str]:
    path = request.args.get("path", "")
    if not path:
        raise InvalidArgument("cp needs a path in the container, e.g. ?path=/etc/hostname")
    location = await containers.ctx.bus.request(ResolveContainer(ref=ref))
    return location, path


async def get_archive(containers: ContainersHandler, ref: str) -> Response:
    """A tar of a path in a container (carte cp CONTAINER:PATH ...)."""
    location, path = await _located(containers, ref)
    scratch = containers.ctx.run_root / "cp"
    scratch.mkdir(parents=True, exist_ok=True)
    spool = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY, dir=str(scratch))

    def archive() -> None:
        with container_root(location, scratch) as root_fd:
            write_archive(root_fd, location.name, path, spool)
        spool.seek(0)

    try:
        await trio.to_thread.run_sync(archive, limiter=containers.copies)
    except BaseException:
        spool.close()
        raise
    return Response(_stream(spool), content_type="application/x-tar")


async def put_archive(containers: ContainersHandler, ref: str) -> Response:
    """Unpack a tar into a container (carte cp ... CONTAINER:PATH)."""
    location, path = await _located(containers, ref)
    scratch = containers.ctx.run_root / "cp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY, dir=str(scratch)) as spool:
        async for chunk in request.body:
            spool.write(chunk)
        spool.seek(0)

        def unpack() -> None:
            with container_root(location, scratch) as root_fd:
                extract_archive(root_fd, location.name, path, spool)

        await trio.to_thread.run_sync(unpack, limiter=containers.copies)
    return Response("{}", content_type="application/json")


COPY_ROUTES = (
    Route("GET", "/v1/containers/<ref>/archive", get_archive, streams=True),
    Route("PUT", "/v1/containers/<ref>/archive", put_archive, upload=True),
)


async def _stream(spool: IO[bytes]) -> AsyncIterator[bytes]:
    """The spooled tar in pieces; the spool is closed at the end or on cancellation."""
    try:
        while chunk := await trio.to_thread.run_sync(spool.read, _CHUNK):
            yield chunk
    finally:
        spool.close()
