"""Wire schema for stacks, services, replicas and rollouts: what `carte apply`, `carte stack`,
`carte service` and `carte rollout` send and show.

A stack is one Compose file applied under a name; each of its services runs `replicas`
containers labelled com.carte.stack, com.carte.service, com.carte.replica and
com.carte.revision. Durations are seconds (float); sizes bytes; times RFC 3339 strings in UTC.
"""

from typing import Literal

import msgspec

from carte.api.containers import PortSpec

STACK_LABEL = "com.carte.stack"
SERVICE_LABEL = "com.carte.service"
REPLICA_LABEL = "com.carte.replica"
REVISION_LABEL = "com.carte.revision"


class _Wire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request/response bodies: unknown fields are a 400 naming the field."""


class AutoscaleSpec(_Wire, kw_only=True):
    """`x-carte.autoscale` of a service (Kubernetes' HPA, read by the autoscaler handler).

    `target_memory_percent` 0 means memory is not a metric; `scale_down_stabilization`
    is the window (s) whose highest recommendation a scale-down takes.
    """

    min: int = 1
    max: int
    target_cpu_percent: int = 80
    target_memory_percent: int = 0
    scale_down_stabilization: float = 300.0


class PlanAction(_Wire, kw_only=True):
    """One line of a plan: what happens to one service (or the stack's network)."""

    action: Literal["create", "replace", "scale", "remove", "unchanged"]
    kind: Literal["service", "network", "volume"] = "service"
    name: str
    detail: str = ""


class Plan(_Wire, kw_only=True):
    """`carte apply` result: the actions in order; `dry_run` True when nothing was changed;
    `warnings` for the user (unset variables, ports nothing can reach)."""

    stack: str
    dry_run: bool = False
    actions: list[PlanAction] = []
    warnings: list[str] = []


class StackSummary(_Wire, kw_only=True):
    name: str
    services: int
    file_name: str = ""
    updated: str = ""


class ServiceSummary(_Wire, kw_only=True):
    """`carte service ls`: a service's replica counts and autoscale bounds."""

    stack: str
    name: str
    image: str
    desired: int
    running: int
    ready: int
    revision: int
    ports: list[PortSpec] = []
    autoscale: AutoscaleSpec | None = None
    rollout: str = ""


class ReplicaSummary(_Wire, kw_only=True):
    """`carte service ps` / `carte stack ps`: one replica container."""

    stack: str
    service: str
    replica: int
    revision: int
    container_id: str
    name: str
    image: str
    status: str
    ready: bool = False
    ip: str = ""
    node: str = ""
    """In a cluster (asked of a control plane): the node that runs it ('' pending)."""


class RevisionSummary(_Wire, kw_only=True):
    """`carte rollout history`: one kept revision of a service's spec."""

    revision: int
    created: str
    image: str
    change: str = ""
    current: bool = False


RolloutState = Literal[
    "idle", "progressing", "paused", "rolling_back", "completed", "failed", "rolled_back"
]


class Rollout(_Wire, kw_only=True):
    """Progress of a service's latest update. `state` ends in completed, paused, rolled_back
    or failed; `message` says why in one line."""

    stack: str
    service: str
    revision: int
    from_revision: int = 0
    state: RolloutState = "idle"
    updated: int = 0
    total: int = 0
    message: str = ""


class ServiceDetails(_Wire, kw_only=True):
    """`carte service inspect`: the stored spec (JSON of the parsed manifest entry), its
    revision, replicas and the latest rollout."""

    stack: str
    name: str
    revision: int
    spec: dict[str, object] = {}
    replicas: list[ReplicaSummary] = []
    rollout: Rollout | None = None
    vip: str = ""
    """The service's virtual IP on its stack network ("" until assigned, or in a cluster)."""
