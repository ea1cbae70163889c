"""Docker's byte-stream routes, relayed to the routes Carte serves them with (`_carte_api`):
cp (``/containers/ID/archive`` GET, HEAD, PUT), export, images/get (save) and images/load.

Docker's cp reads a path's stat from the ``X-Docker-Container-Path-Stat`` header (base64
JSON: name, size, mode as Go's FileMode, mtime, linkTarget); it is taken from the first
member of the tar Carte answers, so HEAD costs the archive's first block only. Errors come
before the first byte (Carte spools archives first) and keep Carte's message and status.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from quart import Response, request
from quart_trio import QuartTrio

from carte.api.errors import InvalidArgument
from carte.engine import HandlerContext
from carte.handlers.docker._carte_api import ApiResponse, CarteApi
from carte.handlers.docker._shapes import flag

TAR = "application/x-tar"
UPLOAD_ENDPOINTS = {"put_archive", "load_images", "build"}
_STAT_LIMIT = 1 << 20  # a first member's headers (pax, long names) fit well within this
# Go's os.FileMode type bits
_GO_DIR, _GO_SYMLINK, _GO_PIPE, _GO_DEVICE, _GO_CHAR = 1 << 31, 1 << 27, 1 << 25, 1 << 26, 1 << 21
_GO_SETUID, _GO_SETGID, _GO_STICKY = 1 << 23, 1 << 22, 1 << 20


def go_file_mode(member: tarfile.TarInfo) -> int:
    mode = member.mode & 0o777
    for bit, go_bit in ((0o4000, _GO_SETUID), (0o2000, _GO_SETGID), (0o1000, _GO_STICKY)):
        if member.mode & bit:
            mode |= go_bit
    if member.isdir():
        mode |= _GO_DIR
    elif member.issym():
        mode |= _GO_SYMLINK
    elif member.isfifo():
        mode |= _GO_PIPE
    elif member.ischr():
        mode |= _GO_DEVICE | _GO_CHAR
    elif member.isblk():
        mode |= _GO_DEVICE
    return mode


def path_stat(member: tarfile.TarInfo) -> str:
    """The ``X-Docker-Container-Path-Stat`` value for a tar's first member."""
    mtime = datetime.fromtimestamp(member.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stat = {
        "name": member.name.rstrip("/").rsplit("/", 1)[-1],
        "size": member.size,
        "mode": go_file_mode(member),
        "mtime": mtime,
        "linkTarget": member.linkname,
    }
    return base64.b64encode(json.dumps(stat).encode()).decode()


async def _first_member(chunks: AsyncIterator[bytes]) -> tuple[tarfile.TarInfo, bytes]:
    """The first member's header and every byte read to find it."""
    buffered = b""
    async for chunk in chunks:
        buffered += chunk
        try:
            with tarfile.open(fileobj=io.BytesIO(buffered), mode="r:") as archive:
                member = archive.next()
        except (tarfile.ReadError, EOFError):
            member = None
        if member is not None:
            return member, buffered
        if len(buffered) > _STAT_LIMIT:
            break
    raise InvalidArgument("Carte's archive of that path has no readable first member")


async def _relay(stack: AsyncExitStack, response: ApiResponse, first: bytes = b"") -> Any:
    """Yield `first` then the rest of `response`; the connection closes at the end."""
    try:
        if first:
            yield first
        async for chunk in response:
            yield chunk
    finally:
        await stack.aclose()


async def _relay_body(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def _opened(api: CarteApi, method: str, target: str) -> tuple[AsyncExitStack, ApiResponse]:
    stack = AsyncExitStack()
    try:
        response = await stack.enter_async_context(api.request(method, target))
    except BaseException:
        await stack.aclose()
        raise
    return stack, response


def add_transfer_routes(app: QuartTrio, ctx: HandlerContext, api: CarteApi) -> None:
    del ctx

    def archive_target(ref: str) -> str:
        path = request.args.get("path") or ""
        if not path:
            raise InvalidArgument("archive needs path=PATH in the container")
        return f"/v1/containers/{ref}/archive?" + urlencode({"path": path})

    @app.route("/containers/<ref>/archive", methods=["GET", "HEAD"])
    async def get_archive(ref: str) -> Response:
        stack, response = await _opened(api, "GET", archive_target(ref))
        try:
            member, buffered = await _first_member(aiter(response))
        except BaseException:
            await stack.aclose()
            raise
        headers = {"X-Docker-Container-Path-Stat": path_stat(member)}
        if request.method == "HEAD":
            await stack.aclose()
            return Response("", headers=headers, content_type=TAR)
        return Response(_relay(stack, response, buffered), headers=headers, content_type=TAR)

    @app.put("/containers/<ref>/archive")
    async def put_archive(ref: str) -> Response:
        if flag(request.args, "copyUIDGID"):
            raise InvalidArgument("Carte does not support copyUIDGID (docker cp -a)")
        body = aiter(request.body)
        first = b""
        async for first in body:
            if first:
                break
        if not first:
            raise InvalidArgument("cp: the archive sent is empty; send a tar stream of the files")
        async with api.request("PUT", archive_target(ref), _relay_body(first, body)) as response:
            await response.read()
        return Response("", status=200)

    @app.get("/containers/<ref>/export")
    async def export(ref: str) -> Response:
        stack, response = await _opened(api, "GET", f"/v1/containers/{ref}/export")
        return Response(_relay(stack, response), content_type=TAR)

    async def save(names: list[str]) -> Response:
        if not names:
            raise InvalidArgument("images/get needs names=IMAGE")
        query = urlencode([("format", "docker"), *(("name", name) for name in names)])
        stack, response = await _opened(api, "GET", f"/v1/images/save?{query}")
        return Response(_relay(stack, response), content_type=TAR)

    @app.get("/images/get")
    async def save_images() -> Response:
        return await save(request.args.getlist("names"))

    @app.get("/images/<path:name>/get")
    async def save_image(name: str) -> Response:
        return await save([name])

    @app.post("/images/load")
    async def load_images() -> Response:
        async with api.request("POST", "/v1/images/load", aiter(request.body)) as response:
            loaded = json.loads(await response.read())["result"]
        lines = []
        for image in loaded:
            for name in image.get("names") or []:
                lines.append({"stream": f"Loaded image: {name}\n"})
            if not image.get("names"):
                lines.append({"stream": f"Loaded image ID: {image['id']}\n"})
        return Response(
            "".join(json.dumps(line) + "\n" for line in lines), content_type="application/json"
        )
