"""The loopback listener's own app: the login form, logout, and every dashboard route.

It is a separate quart app from the API's (the loopback listener serves the dashboard, never
the API), wrapped in `LoginGuard`; what passes the guard and changes state (a login, the
scale form, logout) goes to the audit log with ``"api": "ui"`` and the session's role. The
dashboard routes are the handler's own `Route`s, bound to its running instance exactly as the
http handler binds them on the API's listeners.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from carte.api.errors import CarteError
from carte.engine.handler import Route
from carte.engine.log import describe_error, traceback_text
from carte.engine.timing import Latencies
from carte.handlers.http import AuditEntry, RequestRecorder
from carte.handlers.ui._auth import COOKIE, SESSION_SECONDS, LoginGuard, session_of
from carte.handlers.ui._html import esc, html_response, see_other

if TYPE_CHECKING:
    from carte.handlers.ui._handler import UiHandler


def build_login_app(ui: UiHandler, audit: Callable[[AuditEntry], Awaitable[None]]) -> Any:
    """The ASGI app of the loopback listener (no task of its own); ``audit`` takes the
    audit log's entries."""
    app = QuartTrio("carte-ui", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 64 << 10

    @app.get("/")
    async def root() -> Response:
        return see_other("/ui/")

    @app.route("/ui/login", methods=["GET", "POST"])
    async def login() -> Response:
        target = _safe_next(request.args.get("next", ""))
        if request.method == "GET":
            return _login_page(target, "")
        form = await request.form
        session = ui.credentials.login(form.get("token", ""))
        if session is None:
            return _login_page(target, "That is not the token in ROOT/ui-token.", 401)
        response = see_other(target)
        response.set_cookie(
            COOKIE,
            session,
            max_age=SESSION_SECONDS,
            path="/ui",
            httponly=True,
            samesite="Strict",
        )
        return response

    @app.post("/ui/logout")
    async def logout() -> Response:
        form = await request.form
        ui.require_csrf(form.get("csrf", ""))
        ui.credentials.logout(session_of(request.headers.get("x-carte-peer", "")))
        response = see_other("/ui/login")
        response.delete_cookie(COOKIE, path="/ui")
        return response

    @app.errorhandler(CarteError)
    async def refused(error: CarteError) -> Response:
        body = f'<p class="error">{esc(error.message)}</p>'
        return ui.page("Error", body, section="", status=error.status)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        body = f'<p class="error">{esc(error.description or error.name)}</p>'
        return ui.page(error.name, body, section="", status=error.code or 500)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        ui.ctx.log.error(
            "dashboard request failed",
            extra={
                "path": request.path,
                "error": describe_error(error),
                "traceback": traceback_text(error),
            },
        )
        body = '<p class="error">The dashboard failed; the daemon log has details.</p>'
        return ui.page("Error", body, section="", status=500)

    for route in ui.routes:
        _bind(app, ui, route)
    recorded = RequestRecorder(app, routes=app, latencies=Latencies(), audit=audit, api="ui")
    return LoginGuard(recorded, ui.credentials)


def _bind(app: QuartTrio, ui: UiHandler, route: Route) -> None:
    serve = route.serve

    async def view(**params: Any) -> Any:
        return await serve(ui, **params)

    view.__name__ = serve.__name__
    if route.method == "WEBSOCKET":
        app.add_websocket(route.path, serve.__name__, view)
    else:
        app.add_url_rule(route.path, serve.__name__, view, methods=[route.method])


def _safe_next(target: str) -> str:
    """Only a dashboard path of this site (never another origin) after logging in."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/nodes"


def _login_page(target: str, problem: str, status: int = 200) -> Response:
    error = f'<p class="error">{esc(problem)}</p>' if problem else ""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in · Carte</title>'
        '<link rel="stylesheet" href="/ui/assets/ui.css"></head><body>'
        '<header><span class="brand">Carte</span></header><h1>Log in</h1><main>'
        f'{error}<form method="post" action="/ui/login?next={esc(quote(target, safe="/"))}">'
        '<p><label>Token <input type="password" name="token" id="token" autofocus '
        'autocomplete="off"></label> <button id="login">Log in</button></p></form>'
        "<p>The token is in ROOT/ui-token (root only, new at every daemon start): "
        "<code>sudo cat /var/lib/carte/ui-token</code>.</p></main></body></html>"
    )
    return html_response(document, status)
