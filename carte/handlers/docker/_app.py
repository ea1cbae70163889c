"""The quart-trio application behind the Docker socket: ping, version, info, errors, and the
container, image, network and volume routes (`_containers`, `_objects`).

Docker clients put the API version in front of the path (``/v1.41/containers/json``);
`strip_version` takes it off before routing. Every error is Docker's ``{"message": "..."}``
with a status: a `CarteError` keeps its own, an unknown route is 404 saying Carte does not
serve it, anything else is 500 and is logged with its traceback. BuildKit (``/session``,
``/build?version=2``) is refused so the CLI falls back to the classic builder.
"""

import os
import platform
import re
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from carte import __version__
from carte.api.errors import CarteError
from carte.api.events import ListContainers, ListImages
from carte.api.host import kernel_release, read_cgroup_layout
from carte.engine import HandlerContext
from carte.handlers.docker._build import add_build_routes
from carte.handlers.docker._containers import add_container_routes
from carte.handlers.docker._exec import add_exec_routes
from carte.handlers.docker._interactive import Sessions
from carte.handlers.docker._objects import add_object_routes
from carte.handlers.docker._observe import add_observe_routes
from carte.handlers.docker._shapes import reply
from carte.handlers.docker._transfers import UPLOAD_ENDPOINTS, add_transfer_routes
from carte.handlers.http import log_unexpected

API_VERSION = "1.41"
MIN_API_VERSION = "1.24"
MAX_JSON_BODY = 16 << 20
SERVER = f"Carte/{__version__}"
_VERSIONED = re.compile(r"^/v\d+\.\d+(?=/)")

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def strip_version(app: ASGIApp) -> ASGIApp:
    """`app` seeing ``/containers/json`` for ``/v1.41/containers/json``."""

    async def unversioned(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            path = _VERSIONED.sub("", scope["path"], count=1)
            if path != scope["path"]:
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await app(scope, receive, send)

    return unversioned


def build_app(ctx: HandlerContext, sessions: Sessions) -> QuartTrio:
    """Build the application; it holds no task of its own (hypercorn owns the connections)."""
    app = QuartTrio("carte-docker", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = None  # checked below: uploads relay to Carte's caps
    app.config["RESPONSE_TIMEOUT"] = None  # wait and follow answers last as long as the work
    log = ctx.log

    def refused(message: str, status: int) -> Response:
        return reply({"message": message}, status)

    @app.before_request
    async def body_limit() -> Response | None:
        length = request.content_length or 0
        if length > MAX_JSON_BODY and request.endpoint not in UPLOAD_ENDPOINTS:
            return refused(f"the request body is over {MAX_JSON_BODY >> 20} MiB", 413)
        return None

    @app.after_request
    async def headers(response: Response) -> Response:
        response.headers["Api-Version"] = API_VERSION
        response.headers["Docker-Experimental"] = "false"
        response.headers["Ostype"] = "linux"
        response.headers["Server"] = SERVER
        return response

    @app.route("/_ping", methods=["GET", "HEAD"])
    async def ping() -> Response:
        response = Response("OK", content_type="text/plain; charset=utf-8")
        response.headers["Builder-Version"] = "1"  # the classic builder: no BuildKit session
        response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
        response.headers["Pragma"] = "no-cache"
        return response

    @app.get("/version")
    async def version() -> Response:
        arch = _go_arch(platform.machine())
        return reply(
            {
                "Platform": {"Name": SERVER},
                "Components": [
                    {
                        "Name": "Engine",
                        "Version": __version__,
                        "Details": {
                            "ApiVersion": API_VERSION,
                            "MinAPIVersion": MIN_API_VERSION,
                            "Os": "linux",
                            "Arch": arch,
                            "KernelVersion": kernel_release(),
                            "Experimental": "false",
                            "GitCommit": "",
                            "GoVersion": "python" + platform.python_version(),
                            "BuildTime": "",
                        },
                    }
                ],
                "Version": __version__,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "GitCommit": "",
                "GoVersion": "python" + platform.python_version(),
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": kernel_release(),
                "BuildTime": "",
            }
        )

    @app.get("/info")
    async def info() -> Response:
        containers = await ctx.bus.request(ListContainers(all=True))
        images = await ctx.bus.request(ListImages())
        states = [c.state for c in containers]
        layout = read_cgroup_layout()
        return reply(
            {
                "ID": "",
                "Name": platform.node(),
                "Containers": len(states),
                "ContainersRunning": states.count("running"),
                "ContainersPaused": states.count("paused"),
                "ContainersStopped": len(states) - states.count("running") - states.count("paused"),
                "Images": len({image.id for image in images}),
                "Driver": "overlay",
                "DriverStatus": [],
                "DockerRootDir": str(ctx.root),
                "MemoryLimit": True,
                "SwapLimit": True,
                "CpuCfsPeriod": True,
                "CpuCfsQuota": True,
                "PidsLimit": True,
                "CgroupDriver": "cgroupfs",
                "CgroupVersion": "2" if layout.mode == "v2" else "1",
                "KernelVersion": kernel_release(),
                "OperatingSystem": "Carte",
                "OSType": "linux",
                "Architecture": platform.machine(),
                "NCPU": os.cpu_count() or 1,
                "MemTotal": _mem_total(),
                "ServerVersion": __version__,
                "DefaultRuntime": "carte",
                "Runtimes": {"carte": {"path": "carte"}},
                "LoggingDriver": "json-file",
                "Plugins": {"Volume": ["local"], "Network": ["bridge"], "Log": ["json-file"]},
                "Swarm": {"LocalNodeState": "inactive"},
                "SecurityOptions": ["name=seccomp,profile=default"],
                "Warnings": [],
            }
        )

    @app.route("/session", methods=["POST", "GET"])
    async def session() -> Response:
        return refused(
            "Carte does not support BuildKit sessions; build with the classic builder "
            "(DOCKER_BUILDKIT=0)",
            501,
        )

    add_container_routes(app, ctx, sessions)
    add_exec_routes(app, ctx, sessions)
    add_transfer_routes(app, ctx, sessions.api)
    add_observe_routes(app, ctx)
    add_build_routes(app, ctx)
    add_object_routes(app, ctx)

    @app.errorhandler(CarteError)
    async def carte_error(error: CarteError) -> Response:
        return refused(error.message, error.status)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status in (404, 405):
            return refused(
                f"Carte does not support {request.method} {request.path} of the Docker Engine "
                "API; see Carte's README (Using Docker tools with Carte) for what it serves",
                404 if status == 404 else 405,
            )
        return refused(error.description or str(error), status)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log_unexpected(log, "docker api request failed", error)
        return refused(f"{type(error).__name__}: {error}; the daemon log has details", 500)

    return app


def _go_arch(machine: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
