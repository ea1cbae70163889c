"""Stacks, services, rollouts and the autoscaler (handlers "stacks", "services", "autoscaler")."""

from typing import ClassVar

import msgspec

from carte.api.containers import PortSpec, Resources
from carte.api.events.base import Command, Fact
from carte.api.stacks import (
    AutoscaleSpec,
    Plan,
    ReplicaSummary,
    RevisionSummary,
    Rollout,
    ServiceDetails,
    ServiceSummary,
    StackSummary,
)

# --- stacks (handler "stacks") -------------------------------------------------------------
# A service is named by its stack and its name. Replicas are containers labelled
# com.carte.stack/service/replica/revision (carte.api.stacks) on the network "<stack>_default"
# (and the manifest's networks, named "<stack>_<net>"). Facts about a service carry
# id "<stack>_<service>".


class ServiceRef(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a command addressed to one service: its stack and its name in that stack."""

    stack: str
    service: str


class ApplyStack(Command[Plan], frozen=True, kw_only=True):
    """Parse `manifest` (the text of a Compose file called `file_name`), store it as the desired
    state of stack `name` and converge. `env` is the client's environment plus its .env file, used
    for ${VAR} interpolation; `project_dir` resolves relative paths (build contexts, binds,
    env_file). With `dry_run`, only the plan is returned. Invalid input: `InvalidArgument` naming
    file, line and key; nothing changed."""

    topic: ClassVar[str] = "stack.apply"
    name: str
    manifest: str
    file_name: str = "compose.yaml"
    project_dir: str = ""
    env: dict[str, str] = {}
    dry_run: bool = False
    profiles: list[str] = []
    """Compose profiles to enable (`--profile`); services without profiles always run."""


class RemoveStack(Command[None], frozen=True, kw_only=True):
    """Remove every replica, network and the desired state of stack `name`."""

    topic: ClassVar[str] = "stack.remove"
    name: str


class ListStacks(Command[list[StackSummary]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "stack.list"


class ListServices(Command[list[ServiceSummary]], frozen=True, kw_only=True):
    """Services of `stack` (every stack when empty) with desired/running/ready counts."""

    topic: ClassVar[str] = "service.list"
    stack: str = ""


class ListReplicas(Command[list[ReplicaSummary]], frozen=True, kw_only=True):
    """Replica containers of a stack, or of one service of it."""

    topic: ClassVar[str] = "service.replicas"
    stack: str = ""
    service: str = ""


class InspectService(Command[ServiceDetails], ServiceRef, frozen=True, kw_only=True):
    topic: ClassVar[str] = "service.inspect"


class ScaleService(Command[None], ServiceRef, frozen=True, kw_only=True):
    """Set a service's desired replica count (the autoscaler calls this too); the reconciler
    starts or stops replicas. `replicas` < 0: `InvalidArgument`."""

    topic: ClassVar[str] = "service.scale"
    replicas: int


class UpdateServiceResources(Command[None], ServiceRef, frozen=True, kw_only=True):
    """Record new limits for a service in its desired state without replacing replicas (the
    services handler applies them live with UpdateContainer). Fields left 0 keep their value."""

    topic: ClassVar[str] = "service.update_resources"
    resources: Resources


class GetRollout(Command[Rollout], ServiceRef, frozen=True, kw_only=True):
    topic: ClassVar[str] = "rollout.status"


class ListRevisions(Command[list[RevisionSummary]], ServiceRef, frozen=True, kw_only=True):
    topic: ClassVar[str] = "rollout.history"


class UndoRollout(Command[Rollout], ServiceRef, frozen=True, kw_only=True):
    """Roll a service back to `to_revision` (0: the one before the current)."""

    topic: ClassVar[str] = "rollout.undo"
    to_revision: int = 0


class ServiceUpdated(Fact, frozen=True, kw_only=True):
    """A service's desired state changed (created, replaced, scaled, resources, autoscale);
    published on apply and on every daemon start for every stored service. `network` is the
    stack's default network; `ports` the published ones; `container_ports` every port the
    service listens on (ports' container sides plus expose)."""

    topic: ClassVar[str] = "service.updated"
    stack: str
    service: str
    revision: int
    replicas: int
    image: str
    network: str
    networks: list[str] = []
    ports: list[PortSpec] = []
    container_ports: list[int] = []
    resources: Resources = msgspec.field(default_factory=Resources)
    autoscale: AutoscaleSpec | None = None


class ServiceRemoved(Fact, frozen=True, kw_only=True):
    """A service left its stack's manifest (or its stack was removed): drop its VIP."""

    topic: ClassVar[str] = "service.removed"
    stack: str
    service: str


class ReplicaReady(Fact, frozen=True, kw_only=True):
    """A replica passed its readiness gate (readiness probe, else healthcheck, else started):
    it may receive traffic. `id` is the container id; `ip` its address on the stack network."""

    topic: ClassVar[str] = "replica.ready"
    stack: str
    service: str
    container_id: str
    ip: str
    ports: list[int] = []


class ReplicaNotReady(Fact, frozen=True, kw_only=True):
    """A replica must receive no new traffic: its probe failed, it turned unhealthy, it exited,
    or it is about to be stopped (published BEFORE the stop, so the VIP drops it first)."""

    topic: ClassVar[str] = "replica.not_ready"
    stack: str
    service: str
    container_id: str
    ip: str = ""
    reason: str = ""


class RolloutChanged(Fact, frozen=True, kw_only=True):
    """A rollout moved on (a replica updated, paused, rolled back, completed, failed)."""

    topic: ClassVar[str] = "rollout.changed"
    rollout: Rollout


class StackRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "stack.removed"
    stack: str


# --- services (handler "services") and autoscaler (handler "autoscaler") -------------------
# Every service of a stack gets a virtual IP on the stack's default network; the kernel
# (nftables) spreads connections to VIP:port across the service's ready replicas.


class SetServiceAddress(Command[None], frozen=True, kw_only=True):
    """Answer `names` (e.g. "web" and "web.demo") with `ip` to containers on `network`;
    `ip` "" withdraws them. Owned by the network handler (its DNS resolver); idempotent."""

    topic: ClassVar[str] = "network.service_address"
    network: str
    names: list[str]
    ip: str = ""


class ServiceAddressAssigned(Fact, frozen=True, kw_only=True):
    """A service's VIP and the replicas it balances to right now (`backends`: replica IPs).
    Published whenever either changes; `vip` "" means the service's VIP was released."""

    topic: ClassVar[str] = "service.address"
    stack: str
    service: str
    network: str
    vip: str
    backends: list[str] = []


class DrainReplica(Command[None], frozen=True, kw_only=True):
    """Return once the kernel's load balancing sends no new connection to `container_id` (at
    once when it balances to it nowhere). Owned by the services handler; the stacks handler
    asks it between a replica's ReplicaNotReady and its stop."""

    topic: ClassVar[str] = "service.drain"
    public: ClassVar[bool] = False
    container_id: str


class GetServiceAddress(Command[str], frozen=True, kw_only=True):
    """The VIP of `service` of `stack` ("" when it has none). Owned by the services handler;
    `InspectService` shows it."""

    topic: ClassVar[str] = "service.address_get"
    public: ClassVar[bool] = False
    stack: str
    service: str


class AutoscaleDecision(Fact, frozen=True, kw_only=True):
    """One autoscaler evaluation of a service, with its inputs: the replicas it measured,
    each metric's utilization (percent of the request/limit, averaged over ready replicas)
    and target, the recommendation, the stabilized decision and why."""

    topic: ClassVar[str] = "autoscale.decision"
    stack: str
    service: str
    current: int
    desired: int
    recommended: int
    cpu_percent: float | None = None
    target_cpu_percent: int = 0
    memory_percent: float | None = None
    target_memory_percent: int = 0
    reason: str = ""
