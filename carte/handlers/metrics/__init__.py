"""Prometheus metrics: ``GET /metrics`` on the API, and on ``--metrics-listen``."""

from carte.handlers.metrics._handler import MetricsHandler
from carte.handlers.metrics._options import MetricsOptions

__all__ = ["MetricsHandler", "MetricsOptions"]
