"""Kubernetes' horizontal autoscaling rule, pure: no bus, no clock of its own.

desired = ceil(current x utilization / target) per metric, the largest over the metrics; a
ratio within the tolerance of 1 keeps the current count. Scale-up is immediate; scale-down
takes the highest recommendation seen over the stabilization window, so a brief dip does not
remove replicas that the next burst needs again. The result is clamped to [min, max].
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    """A measured utilization (percent of the limit, averaged over replicas) and its target."""

    utilization: float
    target: float


def recommend(current: int, metrics: list[Metric], tolerance: float) -> int:
    """The replica count the metrics ask for: the largest of their proposals, where a metric
    within `tolerance` of its target proposes `current`."""
    proposals = [current]
    for metric in metrics:
        if current <= 0 or metric.target <= 0:
            continue
        ratio = metric.utilization / metric.target
        proposals.append(current if abs(ratio - 1.0) <= tolerance else math.ceil(current * ratio))
    return max(proposals[1:], default=current)


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
