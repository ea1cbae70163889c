"""The quart-trio application behind the unix socket: routes, bodies and error mapping.

Every route answers JSON (or NDJSON for streams). Errors are always
``{"error": {"code", "message"}}``: a `CarteError` maps to its own status, a body that does not
decode is 400 naming the field, an unknown route is 404, anything else is 500 and is logged
with its traceback.

The app serves its own generic routes (ping, version, info, events, commands, openapi) and
every `Route` the handlers declared on the bus (`bus.routes()`): a request to one runs
``route.serve(handler, **params)`` with the owning handler's running instance
(`bus.serving`), or answers 503 naming the handler while it is disabled, skipped or down (a
WebSocket route sends that as its "error" frame). Answers that are not streams must be sent
within ``response_timeout``; streams (``Route.streams``, `/v1/events`) live until the client
leaves.
"""

import json
import logging
import os
import platform
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from carte import API_VERSION, __version__
from carte.api.errors import CarteError, InvalidArgument, NotFound
from carte.api.events import Command
from carte.api.host import kernel_release, read_cgroup_layout
from carte.api.system import ErrorBody, ErrorDetail, HandlerInfo, Info, Version
from carte.engine import HandlerContext
from carte.engine.handler import Route as HandlerRoute
from carte.engine.log import describe_error, traceback_text
from carte.handlers.http._bodies import PacedConnection, PacedRequest
from carte.handlers.http._events import EventQuery, stream_events
from carte.handlers.http._openapi import Route, command_types, openapi_document
from carte.handlers.http._options import ApiOptions

JSON = "application/json"
NDJSON = "application/x-ndjson"
# Bodies above this are decoded in a worker thread, so a big one never stalls the loop.
_DECODE_IN_THREAD = 64 << 10

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_encoder = msgspec.json.Encoder()


def build_app(
    ctx: HandlerContext,
    *,
    options: ApiOptions,
    socket_path: str,
    handler_report: Callable[[], list[HandlerInfo]],
) -> QuartTrio:
    """Build the application; it holds no task of its own (hypercorn owns the connections)."""
    app = QuartTrio("carte", static_folder=None)
    app.request_class = PacedRequest  # uploads are read at the pace the route writes them
    app.asgi_http_class = PacedConnection
    app.config["MAX_CONTENT_LENGTH"] = None  # per route, in front of the app (`BodyLimits`)
    app.config["RESPONSE_TIMEOUT"] = options.response_timeout
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
        response = Response(stream_events(ctx.bus, query), content_type=NDJSON)
        response.timeout = None  # a follow stream: it lives until the client leaves
        return response

    @app.post("/v1/commands/<name>")
    async def command(name: str) -> Response:
        cls = command_types().get(name)
        if cls is None:
            raise NotFound(f'command "{name}" is unknown; see /v1/openapi.json for the list')
        body: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
        if len(body) > _DECODE_IN_THREAD:
            cmd = await trio.to_thread.run_sync(_decode_command, name, cls, body)
        else:
            cmd = _decode_command(name, cls, body)
        result = await ctx.bus.request(cmd)
        return reply({"result": result})

    @app.get("/v1/openapi.json")
    async def openapi() -> Response:
        return reply(openapi_document(_routes(app)))

    for owner, declared in ctx.bus.routes():
        _add_handler_route(app, ctx, owner, declared)

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
        log_unexpected(log, "api request failed", error)
        message = f"{type(error).__name__}: {error}; the daemon log has details"
        return error_reply("internal", message, 500)

    return app


def log_unexpected(log: logging.Logger, message: str, error: Exception) -> None:
    """Log `error`, which no route expected, with the request it broke and its traceback
    (called from a Quart error handler: `request` is the one that failed)."""
    log.error(
        message,
        extra={
            "method": request.method,
            "path": request.path,
            "error": describe_error(error),
            "traceback": traceback_text(error),
        },
    )


def log_failures(app: ASGIApp, log: logging.Logger) -> ASGIApp:
    """`app`, logging with its traceback what escapes it (a stream that failed after its
    first byte, a WebSocket session); hypercorn then ends the answer as before."""

    async def logged(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except Exception as error:
            log.error(
                "api request failed",
                extra={
                    "path": scope.get("path", ""),
                    "error": describe_error(error),
                    "traceback": traceback_text(error),
                },
            )

    return logged


def upload_endpoints(app: QuartTrio) -> set[str]:
    """Endpoints of the routes declared ``upload`` (they get the upload body cap)."""
    return {
        endpoint
        for endpoint, view in app.view_functions.items()
        if getattr(view, "carte_upload", False)
    }


def _decode_command(name: str, cls: type[Command[Any]], body: bytes) -> Command[Any]:
    try:
        command: Command[Any] = msgspec.json.decode(body or b"{}", type=cls)
        return command
    except msgspec.ValidationError as error:
        raise InvalidArgument(f"body of {name}: {error}") from None
    except msgspec.DecodeError as error:
        raise InvalidArgument(f"body of {name} is not valid JSON: {error}") from None


def _add_handler_route(
    app: QuartTrio, ctx: HandlerContext, owner: str, route: HandlerRoute
) -> None:
    """Serve `route` with the running instance of handler `owner` (503 naming it otherwise)."""
    serve = route.serve
    endpoint = f"{owner}.{serve.__name__}"
    view: Callable[..., Awaitable[Any]]
    if route.method == "WEBSOCKET":

        async def socket_view(**params: Any) -> None:
            try:
                handler = await ctx.bus.serving(owner)
            except CarteError as error:
                await websocket.accept()
                frame = {
                    "type": "error",
                    "code": error.code,
                    "status": error.status,
                    "message": error.message,
                }
                await websocket.send(json.dumps(frame))
                return
            await serve(handler, **params)

        view = socket_view
        view.__doc__ = serve.__doc__
        app.add_websocket(route.path, endpoint, view)
        return

    async def http_view(**params: Any) -> Any:
        handler = await ctx.bus.serving(owner)
        response = await serve(handler, **params)
        if route.streams and isinstance(response, Response):
            response.timeout = None  # lives as long as the work or the client
        return response

    view = http_view
    view.__doc__ = serve.__doc__
    view.carte_upload = route.upload  # type: ignore[attr-defined]
    app.add_url_rule(route.path, endpoint, view, methods=[route.method])


def _routes(app: QuartTrio) -> list[Route]:
    """Every route the app serves, for the OpenAPI document (HEAD/OPTIONS left out)."""
    routes = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        doc = (getattr(view, "__doc__", None) or rule.endpoint).strip().splitlines()[0]
        methods = sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})
        routes.append(Route(path=rule.rule, methods=methods, summary=doc))
    return routes
