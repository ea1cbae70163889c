"""Kubernetes' horizontal autoscaling rule, pure: no bus, no clock of its own.

Per metric, as the HPA's replica calculator does: the ratio is the average utilization of
the replicas that have a sample over the target; within the tolerance of 1 it keeps the
current count, else desired = ceil(ratio x replicas counted). Replicas without a sample yet
(ready but in their first period, or whose stats failed: "missing") count as idle on a
scale-up and as at the target on a scale-down; replicas not ready yet count as idle on a
scale-up and are left out of a scale-down. When counting those turns the direction round or
brings the ratio within tolerance, the count stays: a replica that just started never
inflates the average, so one busy replica of two gives 2 or 3, never 4. The largest
proposal over the metrics wins. Scale-up is immediate; scale-down
takes the highest recommendation seen over the stabilization window, so a brief dip does not
remove replicas that the next burst needs again. The result is clamped to [min, max].

On a control plane the service's replicas run on the cluster's nodes, whose cgroups this
machine cannot read (no route serves a remote replica's stats). Such replicas are not
"missing": they never get a sample, and counting them as idle or at the target would pin the
service at its count (one busy replica here and three on other nodes never scales up).
`measure` takes them at the average of the replicas measured here instead, as the sample
of the service's load that the measured ones are; a service with none measured here keeps
its count, and the decision's reason says how many replicas stood in for how many.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    """A utilization (percent of the limit, averaged over the `measured` replicas that have a
    sample; 0 means all `current` ones) and its target; `missing` ready replicas have no
    sample yet, `unready` ones are running but not ready."""

    utilization: float
    target: float
    measured: int = 0
    missing: int = 0
    unready: int = 0


def measure(
    samples: list[float], target: float, ready: int, elsewhere: int, unready: int
) -> Metric | None:
    """The metric of one resource from the `samples` of replicas measured here, the `ready`
    replicas here (those beyond the samples are missing), the ready ones `elsewhere` (on
    other nodes: taken at the samples' average) and the `unready` ones; None without a
    sample or a target."""
    if not samples or target <= 0:
        return None
    return Metric(
        utilization=sum(samples) / len(samples),
        target=target,
        measured=len(samples) + elsewhere,
        missing=max(0, ready - len(samples)),
        unready=unready,
    )


def recommend(current: int, metrics: list[Metric], tolerance: float) -> int:
    """The replica count the metrics ask for: the largest of their proposals."""
    proposals = [_propose(current, metric, tolerance) for metric in metrics]
    return max((p for p in proposals if p is not None), default=current)


def _propose(current: int, metric: Metric, tolerance: float) -> int | None:
    if current <= 0 or metric.target <= 0:
        return None
    measured = metric.measured or current
    ratio = metric.utilization / metric.target
    if not metric.missing and not metric.unready:
        return current if abs(ratio - 1.0) <= tolerance else math.ceil(ratio * measured)
    total, count = metric.utilization * measured, measured
    if ratio > 1.0:
        count += metric.missing + metric.unready
    elif ratio < 1.0:
        total += metric.target * metric.missing
        count += metric.missing
    adjusted = total / count / metric.target
    if abs(adjusted - 1.0) <= tolerance or (ratio - 1.0) * (adjusted - 1.0) < 0:
        return current
    proposal = math.ceil(adjusted * count)
    if (adjusted < 1.0 and proposal > current) or (adjusted > 1.0 and proposal < current):
        return current
    return proposal


@dataclass
class Stabilizer:
    """Recommendations of one service over time; `decide` applies the scale-down window."""

    window: float
    history: deque[tuple[float, int]] = field(default_factory=deque)

    def decide(self, now: float, current: int, recommendation: int, low: int, high: int) -> int:
        """The count to run now: up at once, down to the highest recommendation in the window."""
        self.history.append((now, recommendation))
        while self.history and self.history[0][0] < now - self.window:
            self.history.popleft()
        if recommendation >= current:
            desired = recommendation
        else:
            desired = min(current, max(r for _, r in self.history))
        return max(low, min(high, desired))
