"""Latency histograms kept in memory, and a `Store` that times every operation into one.

`Latencies` is a plain accumulator (no exposition format): the metrics handler reads its
`series()` and turns them into Prometheus histograms. `TimedStore` wraps the daemon's store
(the daemon does it once, at composition), so every handler's store call is measured by
operation; a failed call is measured too.
"""

from __future__ import annotations

import bisect
import builtins
import time
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from carte.api.metrics import LATENCY_BUCKETS, LatencySeries
from carte.engine.store import Entry, Operation, Store, Watch

T = TypeVar("T")


class Latencies:
    """Histograms of durations keyed by their labels (bounds: `LATENCY_BUCKETS`)."""

    def __init__(self) -> None:
        self._series: dict[tuple[tuple[str, str], ...], tuple[list[int], list[float]]] = {}

    def observe(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        counts, total = self._series.setdefault(key, ([0] * (len(LATENCY_BUCKETS) + 1), [0.0]))
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        total[0] += seconds

    def series(self) -> list[LatencySeries]:
        return [
            LatencySeries(labels=dict(key), counts=list(counts), sum=total[0], count=sum(counts))
            for key, (counts, total) in self._series.items()
        ]


class TimedStore:
    """``store`` with the duration of every call observed in ``latencies`` by ``operation``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.latencies = Latencies()

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            return await call
        finally:
            self.latencies.observe(time.monotonic() - started, operation=operation)

    async def get(self, key: str) -> Entry | None:
        return await self._timed("get", self.store.get(key))

    async def list(self, prefix: str = "") -> builtins.list[Entry]:
        return await self._timed("list", self.store.list(prefix))

    async def put(self, key: str, value: object, *, lease: int | None = None) -> int:
        return await self._timed("put", self.store.put(key, value, lease=lease))

    async def delete(self, key: str) -> int | None:
        return await self._timed("delete", self.store.delete(key))

    async def cas(self, key: str, value: object, revision: int) -> int:
        return await self._timed("cas", self.store.cas(key, value, revision))

    async def txn(self, operations: Sequence[Operation], expect: Mapping[str, int] = {}) -> int:
        return await self._timed("txn", self.store.txn(operations, expect))

    async def revision(self) -> int:
        return await self._timed("revision", self.store.revision())

    async def snapshot(self, prefix: str = "") -> tuple[builtins.list[Entry], int]:
        return await self._timed("snapshot", self.store.snapshot(prefix))

    def watch(
        self, prefix: str = "", *, buffer: int = 256, since: int | None = None
    ) -> AbstractAsyncContextManager[Watch]:
        return self.store.watch(prefix, buffer=buffer, since=since)

    async def grant_lease(self, ttl: int) -> int:
        return await self._timed("grant_lease", self.store.grant_lease(ttl))

    async def keep_alive(self, lease: int) -> int:
        return await self._timed("keep_alive", self.store.keep_alive(lease))

    async def revoke_lease(self, lease: int) -> None:
        await self._timed("revoke_lease", self.store.revoke_lease(lease))

    def __getattr__(self, name: str) -> Any:
        """Whatever else the wrapped store offers (``compact``, ``expire_leases``...)."""
        return getattr(self.store, name)
