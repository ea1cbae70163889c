"""Wire types of the daemon's own measurements: latency histograms the metrics handler reads
through commands (`GetApiStats`) and exposes on ``/metrics``."""

import msgspec

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of every latency histogram; +Inf is implied."""


class LatencySeries(msgspec.Struct, frozen=True, kw_only=True):
    """One labelled histogram: ``counts[i]`` observations fell at or under
    ``LATENCY_BUCKETS[i]`` and above the bound before (``counts[-1]``: above the last)."""

    labels: dict[str, str]
    counts: list[int]
    sum: float
    count: int


class ApiStats(msgspec.Struct, frozen=True, kw_only=True):
    """The http handler's request latencies by method, route template and status."""

    requests: list[LatencySeries] = []
