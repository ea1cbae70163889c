"""Commands the metrics handler sends to read what only another handler measures."""

from typing import ClassVar

from carte.api.events.base import Command
from carte.api.metrics import ApiStats


class GetApiStats(Command[ApiStats], frozen=True, kw_only=True):
    """The API's request latency histograms since the http handler started (owner "api")."""

    topic: ClassVar[str] = "api.stats"


__all__ = ["GetApiStats"]
