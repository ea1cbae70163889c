"""The ui handler: the web dashboard, off by default (``carte daemon --ui``).

Its routes (`_pages.UI_ROUTES`) are served on two kinds of listener:

* its own loopback listener (``handlers.options.ui.listen``, default 127.0.0.1:7780), which
  serves only the dashboard, behind the login token (see `_auth`); the token is written to
  ROOT/ui-token (0600) at every start and the URL is logged;
* the http handler's listeners, like every handler's routes: the cluster's TCP listener
  (mutual TLS, an admin certificate) and the API's unix socket.

Skipped, with the reason in `carte info`, unless enabled; its routes then answer 503.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request

from carte.engine import Handler, HandlerContext
from carte.handlers.http import open_audit_log
from carte.handlers.ui._auth import (
    TOKEN_FILE,
    Credentials,
    CsrfRefused,
    identity_of,
    write_token,
)
from carte.handlers.ui._html import page
from carte.handlers.ui._login import build_login_app
from carte.handlers.ui._options import UiOptions
from carte.handlers.ui._pages import UI_ROUTES


class UiHandler(Handler):
    """The web dashboard: nodes, stacks and services, rollouts, containers, events."""

    name = "ui"
    Options = UiOptions
    routes = UI_ROUTES

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.credentials = Credentials("")

    async def check(self) -> str | None:
        options: UiOptions = self.ctx.options
        if not options.enabled:
            return (
                "the dashboard is off; start the daemon with --ui or set "
                "handlers.options.ui.enabled: true in carte.yaml"
            )
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write a new login token, then serve the loopback listener until cancelled.

        Fails (the supervisor restarts it with backoff) when the address cannot be bound.
        """
        options: UiOptions = self.ctx.options
        self.credentials = Credentials(write_token(self.ctx.root))
        task_status.started()
        await self.ctx.bus.wait_ready()
        config = HypercornConfig()
        config.bind = [options.listen]
        config.accesslog = None
        config.errorlog = self.ctx.log
        config.graceful_timeout = 1.0
        self.ctx.log.info(
            "dashboard listening",
            extra={
                "url": f"http://{options.listen}/ui/",
                "token_file": str(self.ctx.root / TOKEN_FILE),
            },
        )
        audit = open_audit_log(self.ctx)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(audit.run)
            await serve(build_login_app(self, audit.append), config)
            nursery.cancel_scope.cancel()

    def identity(self) -> str:
        """Who asks: the loopback session, the TCP peer's certificate, or the unix socket."""
        return identity_of(request.headers.get("x-carte-peer", ""))

    def csrf_token(self) -> str:
        return self.credentials.csrf(self.identity())

    def require_csrf(self, offered: str) -> None:
        """Refuse a state change whose form lacks this caller's CSRF token."""
        if not self.credentials.csrf_ok(self.identity(), offered):
            raise CsrfRefused(
                "this form is stale or not from the dashboard (CSRF token missing or wrong); "
                "reload the page and try again"
            )

    def page(self, title: str, body: str, **options: Any) -> Response:
        """A dashboard page for this caller (its CSRF token, a logout button for a session)."""
        session = self.identity().startswith("ui-session/")
        return page(title, body, csrf=self.csrf_token(), session=session, **options)
