"""The autoscaler's options: the ``autoscaler:`` section of carte.yaml."""

from typing import Annotated

import msgspec

from carte.engine.config import HandlerOptions, Positive


class AutoscalerOptions(HandlerOptions, frozen=True, kw_only=True):
    """The horizontal autoscaler (Kubernetes' HPA rule); per-service bounds, targets and the
    scale-down window come from each service's `x-carte.autoscale`."""

    sync_period: Positive = 15.0
    """Seconds between two evaluations of every autoscaled service."""
    tolerance: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.1
    """A utilization within this fraction of its target changes nothing."""
