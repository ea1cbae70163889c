"""The stacks handler's options: the ``stacks:`` section of carte.yaml."""

from __future__ import annotations

from typing import Annotated

import msgspec

from carte.engine.config import HandlerOptions
from carte.stack.validate import Ceilings

_Ceiling = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class StacksOptions(HandlerOptions, frozen=True, kw_only=True):
    """Ceilings on the counts a stack file or `service scale` may ask for, checked before
    anything is stored; a stored record above them is refused with a logged reason."""

    max_replicas: _Ceiling = 1000
    """Replicas of one service (deploy.replicas, autoscale min/max, service scale)."""
    max_ports: _Ceiling = 1000
    """Ports one service publishes or exposes, ranges counted port by port."""

    @property
    def ceilings(self) -> Ceilings:
        return Ceilings(replicas=self.max_replicas, ports=self.max_ports)
