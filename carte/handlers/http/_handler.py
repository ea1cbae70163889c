"""The API handler: serves the HTTP API on the daemon's unix socket, in the daemon's trio run.

hypercorn creates the socket with mode 0660 (umask 0o117) and, when a `carte` group exists,
gives it to that group. The socket is opened only once every handler had its first start
(`bus.wait_ready`), so a client never meets a daemon that cannot serve yet; `run()` reports
started at once (nothing requires "api"), and the daemon's readiness does not wait for it.
The listen backlog is ``handlers.options.api.backlog``; a request with ``Connection: close``
gets its answer and then the connection is closed (h11 does that for hypercorn).
"""

import grp
import logging
import os
from importlib.metadata import entry_points

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from carte.api.events import (
    ClusterConfigured,
    DaemonStarting,
    GetApiStats,
    HandlerCrashed,
    HandlerDisabled,
    HandlerSkipped,
    HandlerStarted,
)
from carte.api.metrics import ApiStats
from carte.api.system import HandlerInfo, HandlerState
from carte.engine import Handler, HandlerContext, on
from carte.engine.timing import Latencies
from carte.handlers.http._app import build_app, log_failures, upload_endpoints
from carte.handlers.http._audit import RequestRecorder, open_audit_log
from carte.handlers.http._limits import BodyLimits
from carte.handlers.http._options import ApiOptions
from carte.handlers.http._peer import PeerHeaderGuard
from carte.handlers.http._tls import TcpListener

SOCKET_UMASK = 0o117  # socket mode 0660

HandlerFact = DaemonStarting | HandlerStarted | HandlerSkipped | HandlerCrashed | HandlerDisabled


class HandlerTable:
    """The state of every handler as told by the handler facts; the newest fact wins."""

    def __init__(self, plugin_names: set[str]) -> None:
        self._plugins = plugin_names
        self._rows: dict[str, tuple[float, HandlerState, str]] = {}

    def record(self, fact: HandlerFact) -> None:
        if isinstance(fact, DaemonStarting):
            for name in fact.handlers:
                self._rows.setdefault(name, (fact.time, "starting", ""))
            return
        previous = self._rows.get(fact.id)
        if previous is not None and previous[0] > fact.time:
            return
        if isinstance(fact, HandlerStarted):
            row: tuple[float, HandlerState, str] = (fact.time, "running", "")
        elif isinstance(fact, HandlerSkipped):
            row = (fact.time, "skipped", fact.reason)
        elif isinstance(fact, HandlerDisabled):
            row = (fact.time, "disabled", fact.reason)
        else:
            row = (fact.time, "failed", f"{fact.error}; restarting in {fact.restart_in:g}s")
        self._rows[fact.id] = row

    def report(self) -> list[HandlerInfo]:
        return [
            HandlerInfo(name=name, state=state, reason=reason, plugin=name in self._plugins)
            for name, (_, state, reason) in self._rows.items()
        ]


def hypercorn_config(bind: str, log: logging.Logger) -> HypercornConfig:
    """hypercorn's config for one of the daemon's servers: ``bind``, no access log, errors
    to ``log``, and a 1 s grace for open connections when it stops."""
    config = HypercornConfig()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    return config


def group_id(name: str) -> int | None:
    """The gid of group `name`, or None when the group does not exist."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class ApiHandler(Handler):
    """HTTP+JSON API on `daemon.socket`."""

    name = "api"
    Options = ApiOptions

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.handlers = HandlerTable(_plugin_handler_names())
        for fact in ctx.bus.journal.since(0.0, _HANDLER_FACTS):
            self.handlers.record(fact)  # type: ignore[arg-type]
        self.tcp = TcpListener(ctx.bus, ctx.log, ctx.options.backlog)
        self.latencies = Latencies()
        self.audit = open_audit_log(ctx)

    @on(GetApiStats)
    async def api_stats(self, command: GetApiStats) -> ApiStats:
        """Request latencies by method, route template and status since this start."""
        return ApiStats(requests=self.latencies.series())

    @on(ClusterConfigured)
    async def listen_tcp(self, fact: ClusterConfigured) -> None:
        """Serve the API on the cluster's TCP address too (mutual TLS): see `_tls`."""
        self.tcp.configure(fact)

    @on(DaemonStarting)
    @on(HandlerStarted)
    @on(HandlerSkipped)
    @on(HandlerCrashed)
    @on(HandlerDisabled)
    async def track_handler(self, fact: HandlerFact) -> None:
        self.handlers.record(fact)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the socket once the daemon can serve, then serve until cancelled; the socket
        file is removed on the way out.

        Fails (and the supervisor restarts it) when the socket cannot be bound, e.g. its
        directory is not writable, or the options are invalid.
        """
        options: ApiOptions = self.ctx.options
        task_status.started()
        await self.ctx.bus.wait_ready()
        path = self.ctx.config.daemon.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        config = hypercorn_config(f"unix:{path}", self.ctx.log)
        config.umask = SOCKET_UMASK
        config.backlog = options.backlog
        gid = group_id(self.ctx.config.daemon.socket_group)
        if gid is not None:
            config.user, config.group = os.getuid(), gid
        app = build_app(
            self.ctx, options=options, socket_path=str(path), handler_report=self.handlers.report
        )
        guarded = BodyLimits(
            app,
            command_limit=options.max_command_body,
            upload_limit=options.max_upload_body,
            upload_endpoints=upload_endpoints(app),
        )
        served = RequestRecorder(
            log_failures(guarded, self.ctx.log),
            routes=app,
            latencies=self.latencies,
            audit=self.audit.append,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.audit.run)
                nursery.start_soon(self.tcp.run, served)
                await serve(PeerHeaderGuard(served), config)
                nursery.cancel_scope.cancel()
        finally:
            path.unlink(missing_ok=True)


_HANDLER_FACTS = (DaemonStarting, HandlerStarted, HandlerSkipped, HandlerCrashed, HandlerDisabled)


def _plugin_handler_names() -> set[str]:
    """Names of the handlers that come from `carte.plugins` entry points.

    The daemon imported them already, so loading is a dictionary lookup; one that fails to
    load would have stopped the daemon, and is simply left out here.
    """
    names = set()
    for entry in entry_points(group="carte.plugins"):
        try:
            names.add(str(entry.load().name))
        except Exception:
            continue
    return names
