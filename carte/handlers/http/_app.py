"""The quart-trio application behind the unix socket: routes, bodies and error mapping.

Every route answers JSON (or NDJSON for streams). Errors are always
``{"error": {"code", "message"}}``: a `CarteError` maps to its own status, a body that does not
decode is 400 naming the field, an unknown route is 404, anything else is 500 and is logged.
"""

import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from carte import API_VERSION, __version__
from carte.api.errors import CarteError, InvalidArgument, NotFound
from carte.api.host import kernel_release, read_cgroup_layout
from carte.api.system import ErrorBody, ErrorDetail, HandlerInfo, Info, Version
from carte.engine import HandlerContext
from carte.handlers.containers import (
    register_archive_routes,
    register_container_routes,
    register_interactive_routes,
)
from carte.handlers.http._events import EventQuery, stream_events
from carte.handlers.http._openapi import Route, command_types, openapi_document
from carte.handlers.images import add_build_routes, register_image_routes

JSON = "application/json"
NDJSON = "application/x-ndjson"

_encoder = msgspec.json.Encoder()


def build_app(
    ctx: HandlerContext,
    *,
    socket_path: str,
    handler_report: Callable[[], list[HandlerInfo]],
) -> QuartTrio:
    """Build the application; it holds no task of its own (hypercorn owns the connections)."""
    app = QuartTrio("carte", static_folder=None)
    log = ctx.log

    def reply(value: Any, status: int = 200) -> Response:
        return Response(_encoder.encode(value), status=status, content_type=JSON)

    def error_reply(code: str, message: str, status: int) -> Response:
        body = ErrorBody(error=ErrorDetail(code=code, message=message))
        return reply(body, status)

    @app.get("/_ping")
    async def ping() -> Response:
        return Response("OK", content_type="text/plain")

    @app.get("/v1/version")
    async def version() -> Response:
        return reply(
            Version(
                version=__version__,
                api_version=API_VERSION,
                python=platform.python_version(),
                os=sys.platform,
                arch=platform.machine(),
                kernel=kernel_release(),
            )
        )

    @app.get("/v1/info")
    async def info() -> Response:
        return reply(
            Info(
                version=__version__,
                pid=os.getpid(),
                kernel=kernel_release(),
                cgroup=read_cgroup_layout(),
                root=str(ctx.root),
                run_root=str(ctx.run_root),
                socket=socket_path,
                handlers=handler_report(),
            )
        )

    @app.get("/v1/events")
    async def events() -> Response:
        query = EventQuery.from_args(request.args.getlist("type"), request.args.get("since"))
        return Response(stream_events(ctx.bus, query), content_type=NDJSON)

    @app.post("/v1/commands/<name>")
    async def command(name: str) -> Response:
        cls = command_types().get(name)
        if cls is None:
            raise NotFound(f'command "{name}" is unknown; see /v1/openapi.json for the list')
        body = await request.get_data(as_text=False)
        try:
            cmd = msgspec.json.decode(body or b"{}", type=cls)
        except msgspec.ValidationError as error:
            raise InvalidArgument(f"body of {name}: {error}") from None
        except msgspec.DecodeError as error:
            raise InvalidArgument(f"body of {name} is not valid JSON: {error}") from None
        result = await ctx.bus.request(cmd)
        return reply({"result": result})

    @app.get("/v1/openapi.json")
    async def openapi() -> Response:
        return reply(openapi_document(_routes(app)))

    register_container_routes(app, ctx)
    register_interactive_routes(app, ctx)
    register_archive_routes(app, ctx)
    register_image_routes(app, ctx)

    @app.errorhandler(CarteError)
    async def carte_error(error: CarteError) -> Response:
        return error_reply(error.code, error.message, error.status)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404:
            message = f"no route {request.method} {request.path}; see /v1/openapi.json"
            return error_reply("not_found", message, 404)
        if status == 405:
            message = f"method {request.method} not allowed on {request.path}"
            return error_reply("method_not_allowed", message, 405)
        return error_reply("http_error", error.description or str(error), status)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.error(
            "api request failed: %s %s: %s: %s",
            request.method,
            request.path,
            type(error).__name__,
            error,
        )
        message = f"{type(error).__name__}: {error}; the daemon log has details"
        return error_reply("internal", message, 500)

    add_build_routes(app, ctx)
    return app


def _routes(app: QuartTrio) -> list[Route]:
    """Every route the app serves, for the OpenAPI document (HEAD/OPTIONS left out)."""
    routes = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        doc = (getattr(view, "__doc__", None) or rule.endpoint).strip().splitlines()[0]
        methods = sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})
        routes.append(Route(path=rule.rule, methods=methods, summary=doc))
    return routes
