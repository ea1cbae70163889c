"""The ``GET /metrics`` route of the API (unix socket and TCP listener)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response

if TYPE_CHECKING:
    from carte.handlers.metrics._handler import MetricsHandler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format, which `generate_latest` writes."""


async def serve_metrics(handler: MetricsHandler) -> Response:
    """Prometheus metrics of containers, services, nodes and the daemon."""
    return Response(await handler.exposition(), content_type=CONTENT_TYPE)
