"""Docker's build, push and registry login (``/auth``) routes, on Carte's `BuildImage`,
`PushImage` and `CheckRegistryLogin` commands; build and push answer
Docker's JSON message stream (``{"stream"}``, ``{"status"}``, ``{"aux"}``, and
``{"error", "errorDetail"}`` when it fails, which the CLI prints and exits 1 on).

Build: the context tar (plain or compressed) is spooled and unpacked with tarfile's "data"
filter (no absolute paths, no climbing out, no devices) into a directory under
``RUN_ROOT/docker-build`` that is removed when the build ends, whatever happened (a client
that leaves cancels the build). Query values Carte's builder cannot honour are refused by
name before anything is read; BuildKit (``version=2``) is refused so the CLI falls back.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import BuildImage, CheckRegistryLogin, PushImage
from carte.api.images import BuildRequest, RegistryLogin
from carte.engine import HandlerContext
from carte.handlers.docker._shapes import JSON, flag

_CHUNK = 1 << 20
_EMPTY = ("", "0", "false", "[]", "{}", "null")
# Docker build query values Carte's builder has no equivalent for (defaults are let through)
_UNSUPPORTED_BUILD = (
    "remote", "extrahosts", "squash", "cachefrom", "platform", "isolation", "cpuperiod",
    "cpuquota", "cpusetcpus", "cpushares", "memory", "memswap", "shmsize", "ulimits", "outputs",
    "session",
)  # fmt: skip
_limiter = trio.CapacityLimiter(2)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\r\n"


def error_line(message: str) -> bytes:
    return _line({"errorDetail": {"message": message}, "error": message})


def _json_arg(args: Any, name: str) -> dict[str, str]:
    text = args.get(name) or ""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"build: {name}={text!r} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"build: {name} must be a JSON object")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def build_request(args: Any) -> BuildRequest:
    """Docker's build query as Carte's `BuildRequest`; refuses what the builder cannot do."""
    if args.get("version") == "2":
        raise InvalidArgument("Carte does not support BuildKit builds; use the classic builder")
    for name in _UNSUPPORTED_BUILD:
        if (args.get(name) or "") not in _EMPTY:
            raise InvalidArgument(f"Carte does not support the build option {name}")
    network = args.get("networkmode") or "default"
    return BuildRequest(
        tags=args.getlist("t"),
        dockerfile=args.get("dockerfile") or "Dockerfile",
        build_args=_json_arg(args, "buildargs"),
        target=args.get("target") or "",
        no_cache=flag(args, "nocache"),
        pull=flag(args, "pull"),
        labels=_json_arg(args, "labels"),
        network="default" if network == "bridge" else network,
    )


def _unpack(spool: Path, context: Path) -> None:
    try:
        with tarfile.open(spool, mode="r:*") as archive:
            archive.extractall(context, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise InvalidArgument(f"build: the context is not a readable tar ({error})") from None


def registry_login(header: str) -> RegistryLogin | None:
    """Docker's ``X-Registry-Auth`` (base64url JSON) as Carte's login; None when empty."""
    if not header:
        return None
    try:
        padded = header + "=" * (-len(header) % 4)
        auth = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error):
        raise InvalidArgument("X-Registry-Auth is not base64url JSON") from None
    if not isinstance(auth, dict) or not auth.get("username"):
        if isinstance(auth, dict) and auth.get("identitytoken"):
            raise InvalidArgument("Carte does not support registry identity tokens")
        return None
    return RegistryLogin(username=str(auth["username"]), password=str(auth.get("password") or ""))


def add_build_routes(app: QuartTrio, ctx: HandlerContext) -> None:
    bus = ctx.bus

    @app.post("/build")
    async def build() -> Response:
        options = build_request(request.args)
        quiet = flag(request.args, "q")
        scratch = ctx.run_root / "docker-build"
        await trio.to_thread.run_sync(lambda: scratch.mkdir(parents=True, exist_ok=True))
        work = Path(await trio.to_thread.run_sync(tempfile.mkdtemp, "", "build-", str(scratch)))
        try:
            async with await trio.open_file(work / "context.tar", "wb") as spool:
                async for chunk in request.body:
                    await spool.write(chunk)
            (work / "context").mkdir()
            await trio.to_thread.run_sync(
                _unpack, work / "context.tar", work / "context", limiter=_limiter
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, work, True)
            raise

        async def messages() -> AsyncIterator[bytes]:
            try:
                if not quiet:
                    yield _line({"stream": f"Building with Carte ({options.dockerfile})\n"})
                command = BuildImage(context=str(work / "context"), options=options)
                try:
                    result = await bus.request(command)
                except CarteError as error:
                    yield error_line(error.message)
                    return
                yield _line({"aux": {"ID": result.id}})
                if quiet:  # the CLI prints the stream of a quiet build as it is
                    yield _line({"stream": result.id + "\n"})
                else:
                    yield _line({"stream": f"Successfully built {_short(result.id)}\n"})
                    for name in result.names:
                        yield _line({"stream": f"Successfully tagged {name}\n"})
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(shutil.rmtree, work, True)

        response = Response(messages(), content_type=JSON)
        response.timeout = None
        return response

    @app.post("/auth")
    async def login() -> Response:
        body = await request.get_json(force=True, silent=True) or {}
        if not body.get("username"):
            raise InvalidArgument("Carte's registry login needs a username and password")
        host = _registry_host(str(body.get("serveraddress") or ""))
        credentials = RegistryLogin(
            username=str(body["username"]), password=str(body.get("password") or "")
        )
        await bus.request(CheckRegistryLogin(host=host, login=credentials))
        return Response(
            json.dumps({"Status": "Login Succeeded", "IdentityToken": ""}), content_type=JSON
        )

    @app.post("/images/<path:name>/push")
    async def push(name: str) -> Response:
        tag = request.args.get("tag") or ""
        reference = f"{name}:{tag}" if tag else name
        login = registry_login(request.headers.get("X-Registry-Auth", ""))
        repository = name  # the CLI sends the tag apart, as tag=

        async def messages() -> AsyncIterator[bytes]:
            yield _line({"status": f"The push refers to repository [{repository}]"})
            try:
                result = await bus.request(PushImage(image=reference, login=login))
            except CarteError as error:
                yield error_line(error.message)
                return
            digest = result.manifest_digest
            yield _line({"status": f"{tag or 'latest'}: digest: {digest}"})
            aux = {"Tag": tag or "latest", "Digest": digest, "Size": 0}
            yield _line({"progressDetail": {}, "aux": aux})

        response = Response(messages(), content_type=JSON)
        response.timeout = None
        return response


def _registry_host(address: str) -> str:
    """``https://127.0.0.1:5000/v2/`` -> ``127.0.0.1:5000`` (the CLI sends either form)."""
    host = address.split("://", 1)[-1].split("/", 1)[0]
    if not host or host in ("index.docker.io", "registry-1.docker.io"):
        return "docker.io"
    return host


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
