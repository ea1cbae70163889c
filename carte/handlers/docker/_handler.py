"""The docker handler: serves Docker's Engine API on its own unix socket, in the daemon's run.

The socket gets the same permissions as Carte's own (mode 0660, group ``daemon.socket_group``
when it exists). Calls that change state go to the audit log as on Carte's own socket (with
``"api": "docker"``; see carte.handlers.http._audit). Without a socket configured the handler
is skipped, so the endpoint is off by default and `carte info` says how to turn it on.
"""

import os
from pathlib import Path

import trio
from hypercorn.trio import serve

from carte.engine import Handler, HandlerContext
from carte.engine.timing import Latencies
from carte.handlers.docker._app import build_app, strip_version
from carte.handlers.docker._carte_api import CarteApi
from carte.handlers.docker._hijack import serve_front
from carte.handlers.docker._interactive import Sessions
from carte.handlers.docker._options import DockerOptions
from carte.handlers.http import RequestRecorder, group_id, hypercorn_config, open_audit_log


class DockerHandler(Handler):
    """Docker's Engine API (a subset, see `_app`) on ``handlers.options.docker.socket``."""

    name = "docker"
    Options = DockerOptions

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        options: DockerOptions = ctx.options
        self.socket = Path(options.socket) if options.socket else None

    async def check(self) -> str | None:
        if self.socket is None:
            return (
                "no Docker API socket configured; start the daemon with --docker-socket PATH "
                "or set handlers.options.docker.socket in carte.yaml"
            )
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the socket once the daemon can serve, then serve until cancelled; the socket
        file is removed on the way out. A socket that cannot be bound fails the handler (the
        supervisor restarts it with backoff)."""
        task_status.started()
        assert self.socket is not None  # check() skipped the handler otherwise
        await self.ctx.bus.wait_ready()
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        inner = self.ctx.run_root / "docker-api.sock"  # private: only the front connects
        inner.parent.mkdir(parents=True, exist_ok=True)
        config = hypercorn_config(f"unix:{inner}", self.ctx.log)
        config.umask = 0o177
        sessions = Sessions(CarteApi(self.ctx.config.daemon.socket_path))
        app = build_app(self.ctx, sessions)
        audit = open_audit_log(self.ctx)
        recorded = RequestRecorder(
            app, routes=app, latencies=Latencies(), audit=audit.append, api="docker"
        )
        gid = group_id(self.ctx.config.daemon.socket_group)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(audit.run)
                await nursery.start(serve, strip_version(recorded), config)
                await nursery.start(serve_front, self.ctx, sessions, self.socket, inner)
                if gid is not None:
                    os.chown(self.socket, os.getuid(), gid)
        finally:
            inner.unlink(missing_ok=True)
