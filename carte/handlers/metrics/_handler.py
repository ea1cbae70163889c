"""The metrics handler: ``GET /metrics`` in the Prometheus text format.

Each scrape reads the daemon's state at that moment through bus commands (`_collect`) into a
private `CollectorRegistry` (one per handler instance, never the library's global one), and
`prometheus_client` writes the exposition. Two counters come from facts instead, because
nothing else keeps them: handler restarts (`HandlerCrashed`) and autoscaler decisions
(`AutoscaleDecision`), counted since the daemon started (read back from the journal when
the handler starts, so a restart of this handler loses none the journal still holds).

Served on the API socket and the TCP listener (a route like any other: mutual TLS with an
admin certificate there), and, with ``listen`` (``--metrics-listen``), on a plain-HTTP
address of its own that answers only ``GET /metrics``: loopback unless ``insecure``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import trio
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from carte.api.events import AutoscaleDecision, HandlerCrashed
from carte.engine import Handler, HandlerContext, on
from carte.engine.handler import Route
from carte.handlers.http import hypercorn_config
from carte.handlers.metrics._collect import Counts, collect
from carte.handlers.metrics._options import MetricsOptions
from carte.handlers.metrics._routes import CONTENT_TYPE, serve_metrics


class _Scrape(Collector):
    """Hands the registry the families the current scrape read."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class MetricsHandler(Handler):
    """Prometheus metrics of containers, services, nodes and the daemon itself."""

    name = "metrics"
    Options = MetricsOptions
    catch_up = False  # the journal is read in __init__ (restarts included)
    routes = (Route("GET", "/metrics", serve_metrics),)

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.counts = Counts()
        for fact in ctx.bus.journal.since(0.0, (HandlerCrashed, AutoscaleDecision)):
            self._count(fact)
        self._scrape = _Scrape()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._scrape)
        self._lock = trio.Lock()

    @on(HandlerCrashed)
    @on(AutoscaleDecision)
    async def count(self, fact: HandlerCrashed | AutoscaleDecision) -> None:
        self._count(fact)

    def _count(self, fact: object) -> None:
        if isinstance(fact, HandlerCrashed):
            self.counts.restarts[fact.id] += 1
        elif isinstance(fact, AutoscaleDecision):
            direction = (
                "up"
                if fact.desired > fact.current
                else "down"
                if fact.desired < fact.current
                else "none"
            )
            self.counts.decisions[(fact.stack, fact.service, direction)] += 1

    async def exposition(self) -> bytes:
        """The text of one scrape. Scrapes run one at a time; cancelling one leaves none
        half-made (the next reads everything again)."""
        async with self._lock:
            self._scrape.families = await collect(self.ctx.bus, self.ctx.store, self.counts)
            try:
                return generate_latest(self.registry)
            finally:
                self._scrape.families = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve ``listen`` (if set) until cancelled. A bind failure crashes the handler (the
        supervisor logs it and retries with backoff); the API socket's /metrics is unaffected
        while the handler runs, and answers 503 naming it while it is down."""
        options: MetricsOptions = self.ctx.options
        task_status.started()
        if not options.listen:
            return
        await self.ctx.bus.wait_ready()
        config = hypercorn_config(options.listen, self.ctx.log)
        self.ctx.log.info(
            "serving /metrics over plain HTTP",
            extra={"listen": options.listen, "insecure": options.insecure},
        )
        await serve(self._plain_app, config)

    async def _plain_app(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI app of the ``listen`` address: GET /metrics, 404 for anything else."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            status, body, kind = 200, await self.exposition(), CONTENT_TYPE
        else:
            status, body, kind = 404, b"only GET /metrics is served here\n", "text/plain"
        headers = [(b"content-type", kind.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""}
        )
