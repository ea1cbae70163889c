"""Every built-in event type, in one module.

Events are frozen, tagged msgspec Structs (the tag is the class name). Two kinds:

* `Command` — imperative, exactly one handler owns it; ``await bus.request(cmd)`` returns the
  command's ``Result`` type or raises a `carte.api.errors.CarteError`.
* `Fact` — past tense, published after the state change is committed; any number of
  subscribers. Every fact carries its topic (class var), a timestamp and the object's id.

Plugins may declare their own subclasses of `Command` and `Fact` in their own modules.
"""

import time
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from carte.api.containers import (
    ContainerConfig,
    ContainerDetails,
    ContainerLocation,
    ContainerStats,
    ContainerSummary,
    CreateResult,
    Endpoint,
    ExecResult,
    Health,
    HealthStatus,
    PortSpec,
    PruneResult,
    Resources,
    RestartPolicy,
    TopResult,
    Volume,
    WaitResult,
)
from carte.api.images import (
    BuildCachePruned,
    BuildRequest,
    BuildResult,
    CommitResult,
    DiskUsageRow,
    HistoryEntry,
    ImageDetails,
    ImagePruneResult,
    ImageSummary,
    PullResult,
    PushResult,
    RegistryLogin,
    RemovedImage,
)
from carte.api.networks import Network, NetworkPolicy, NetworkPruneResult
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

ResultT = TypeVar("ResultT")


def _now() -> float:
    return time.time()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of all events; the tag is the class name."""

    topic: ClassVar[str] = "event"


class Command(Event, Generic[ResultT], frozen=True, kw_only=True):
    """An imperative request with one owning handler and a typed result."""

    topic: ClassVar[str] = "command"


class Fact(Event, frozen=True, kw_only=True):
    """Something that happened; `id` names the object it happened to."""

    topic: ClassVar[str] = "fact"
    id: str = ""
    time: float = msgspec.field(default_factory=_now)


# --- engine facts -------------------------------------------------------------------------


class DaemonStarting(Fact, frozen=True, kw_only=True):
    """The daemon is about to start `handlers`, in this order (published by the daemon)."""

    topic: ClassVar[str] = "daemon.starting"
    pid: int
    handlers: list[str] = []


class DaemonStarted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.started"
    pid: int
    version: str


class DaemonStopping(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.stopping"
    reason: str


class ConfigReloaded(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.config_reloaded"
    applied: list[str] = []
    not_reloadable: list[str] = []


class HandlerStarted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.started"


class HandlerSkipped(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.skipped"
    reason: str


class HandlerDisabled(Fact, frozen=True, kw_only=True):
    """A handler is installed but not run: carte.yaml disables it (published by the daemon)."""

    topic: ClassVar[str] = "handler.disabled"
    reason: str


class HandlerCrashed(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.crashed"
    error: str
    restart_in: float


# --- engine commands ----------------------------------------------------------------------


class Ping(Command[str], frozen=True, kw_only=True):
    """Round trip through the bus; the engine answers "pong"."""

    topic: ClassVar[str] = "engine.ping"


# --- containers (handler "containers") ---------------------------------------------------
# Commands take a container reference: a full id, a unique id prefix, or a name.


class CreateContainer(Command[CreateResult], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.create"
    config: ContainerConfig


class StartContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.start"
    ref: str


class StopContainer(Command[None], frozen=True, kw_only=True):
    """SIGTERM (or the stop signal), then SIGKILL after `timeout` s (config default 10)."""

    topic: ClassVar[str] = "container.stop"
    ref: str
    timeout: int | None = None


class KillContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.kill"
    ref: str
    signal: str = "KILL"


class RestartContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.restart"
    ref: str
    timeout: int | None = None


class RemoveContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.remove"
    ref: str
    force: bool = False
    volumes: bool = False


class PauseContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.pause"
    ref: str


class UnpauseContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.unpause"
    ref: str


class RenameContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.rename"
    ref: str
    name: str


class UpdateContainer(Command[None], frozen=True, kw_only=True):
    """Live resource limits (and restart policy) of a container, no restart."""

    topic: ClassVar[str] = "container.update"
    ref: str
    resources: Resources | None = None
    restart: RestartPolicy | None = None


class WaitContainer(Command[WaitResult], frozen=True, kw_only=True):
    """Wait until the container is not running ("not-running") or for its next exit
    ("next-exit"). With "next-exit", `since` (Unix seconds, with the full id as `ref`) also
    accepts an exit at or after that time that already happened, even if --rm removed it."""

    topic: ClassVar[str] = "container.wait"
    ref: str
    condition: str = "not-running"
    since: float = 0.0


class InspectContainer(Command[ContainerDetails], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.inspect"
    ref: str


class ListContainers(Command[list[ContainerSummary]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.list"
    all: bool = False
    filters: dict[str, list[str]] = {}


class PruneContainers(Command[PruneResult], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.prune"
    filters: dict[str, list[str]] = {}


class TopContainer(Command[TopResult], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.top"
    ref: str


class GetContainerStats(Command[ContainerStats], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.stats"
    ref: str


class ExecInContainer(Command[ExecResult], frozen=True, kw_only=True):
    """Run a process in a running container to completion, capturing (bounded) output."""

    topic: ClassVar[str] = "container.exec"
    ref: str
    cmd: list[str]
    env: list[str] = []
    user: str = ""
    workdir: str = ""
    timeout: float | None = None


class ResolveContainer(Command[ContainerLocation], frozen=True, kw_only=True):
    """A container's id, status and host paths (shim socket, upper dir, ...) from a reference."""

    topic: ClassVar[str] = "container.resolve"
    ref: str


class ContainerCreated(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.created"
    name: str
    image: str


class ContainerStarted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.started"
    name: str
    pid: int


class ContainerExited(Fact, frozen=True, kw_only=True):
    """The container's process ended. `requested` is True when a user (stop/kill/rm -f) or the
    daemon asked for it, so restart policies can tell a crash from a stop."""

    topic: ClassVar[str] = "container.exited"
    name: str
    exit_code: int
    oom_killed: bool = False
    requested: bool = False


class ContainerKilled(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.killed"
    signal: str


class ContainerPaused(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.paused"


class ContainerUnpaused(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.unpaused"


class ContainerRenamed(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.renamed"
    old_name: str
    name: str


class ContainerUpdated(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.updated"


class ContainerRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.removed"
    name: str


class HealthChanged(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.health"
    status: HealthStatus
    failing_streak: int = 0
    output: str = ""


# --- health and restart policies (handlers "health" and "restart") -------------------------
# The containers handler owns every container record, so it answers these two commands: the
# health and restart handlers tell it what to store and it stays the record's only writer.


class SetContainerHealth(Command[None], frozen=True, kw_only=True):
    """Store the health handler's latest `Health` of a container in its record (state.health),
    so inspect and ps show it. A container that is no longer running keeps the health it had;
    the command is then ignored without error (a late probe must not undo an exit)."""

    topic: ClassVar[str] = "container.set_health"
    ref: str
    health: Health


class SetContainerRestarting(Command[None], frozen=True, kw_only=True):
    """The restart handler will start this exited container again after a delay: store status
    "restarting" (state.restarting True) and `restart_count`. `Conflict` when the container is
    not exited any more (a user started or removed it meanwhile). A stop, kill or rm of a
    restarting container ends the wait: it becomes "exited" and the restart is not made."""

    topic: ClassVar[str] = "container.set_restarting"
    ref: str
    restart_count: int


class ContainerRestarting(Fact, frozen=True, kw_only=True):
    """A restart policy will start the container again after `delay` seconds (Docker's
    "restart" event of an automatic restart)."""

    topic: ClassVar[str] = "container.restart"
    name: str
    restart_count: int
    delay: float


# --- volumes (handler "volumes") ----------------------------------------------------------


class CreateVolume(Command[Volume], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.create"
    name: str = ""
    labels: dict[str, str] = {}


class ListVolumes(Command[list[Volume]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.list"
    filters: dict[str, list[str]] = {}


class InspectVolume(Command[Volume], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.inspect"
    name: str


class RemoveVolume(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.remove"
    name: str
    force: bool = False


class PruneVolumes(Command[PruneResult], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.prune"


class VolumeCreated(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.created"


class VolumeRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.removed"


# --- networks (handler "network"); the containers handler calls these around start/remove ---


class AttachContainerNetwork(Command[Endpoint], frozen=True, kw_only=True):
    """Give a created (not yet started) container its interface on `network` inside the
    network namespace at `netns_path`, publish its ports and register its DNS names."""

    topic: ClassVar[str] = "network.attach"
    container_id: str
    container_name: str
    hostname: str
    netns_path: str
    network: str
    aliases: list[str] = []
    ip: str = ""
    ports: list[PortSpec] = []


class DetachContainerNetwork(Command[None], frozen=True, kw_only=True):
    """Remove a container's interfaces, addresses, published ports and DNS names; idempotent."""

    topic: ClassVar[str] = "network.detach"
    container_id: str


class CreateNetwork(Command[Network], frozen=True, kw_only=True):
    """A bridge network; `subnet`/`gateway` empty means chosen from the configured pools."""

    topic: ClassVar[str] = "network.create"
    name: str
    subnet: str = ""
    gateway: str = ""
    internal: bool = False
    labels: dict[str, str] = {}


class ListNetworks(Command[list[Network]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "network.list"


class InspectNetwork(Command[Network], frozen=True, kw_only=True):
    topic: ClassVar[str] = "network.inspect"
    name: str


class RemoveNetwork(Command[None], frozen=True, kw_only=True):
    """Remove a network no container is attached to."""

    topic: ClassVar[str] = "network.remove"
    name: str


class PruneNetworks(Command[NetworkPruneResult], frozen=True, kw_only=True):
    """Remove every user-defined network without containers."""

    topic: ClassVar[str] = "network.prune"


class ConnectNetwork(Command[Endpoint], frozen=True, kw_only=True):
    """Attach a running container to one more network (no default route through it)."""

    topic: ClassVar[str] = "network.connect"
    network: str
    container: str
    aliases: list[str] = []
    ip: str = ""


class DisconnectNetwork(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "network.disconnect"
    network: str
    container: str


class AddNetworkPolicy(Command[NetworkPolicy], frozen=True, kw_only=True):
    """Allow traffic on `network`; the first policy makes the network default-deny."""

    topic: ClassVar[str] = "network.policy.add"
    network: str
    policy: NetworkPolicy


class ListNetworkPolicies(Command[list[NetworkPolicy]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "network.policy.list"
    network: str


class RemoveNetworkPolicy(Command[None], frozen=True, kw_only=True):
    """Remove a policy by id (a unique prefix is enough)."""

    topic: ClassVar[str] = "network.policy.remove"
    network: str
    id: str


class NetworkCreated(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "network.created"


class NetworkRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "network.removed"


# --- images (handler "images") -------------------------------------------------------------


class ImportImage(Command[ImageSummary], frozen=True, kw_only=True):
    """Store a root filesystem tarball (at `source` on the daemon's host) as a one-layer image."""

    topic: ClassVar[str] = "image.import"
    source: str
    name: str = ""


class ListImages(Command[list[ImageSummary]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.list"
    all: bool = False
    filters: dict[str, list[str]] = {}


class InspectImage(Command[ImageDetails], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.inspect"
    ref: str


class TagImage(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.tag"
    source: str
    target: str


class RemoveImage(Command[list[RemovedImage]], frozen=True, kw_only=True):
    """Remove a tag (or, given an id, the image); refused while a container uses the image
    unless `force`."""

    topic: ClassVar[str] = "image.remove"
    ref: str
    force: bool = False


class ImageImported(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.imported"
    name: str


class ImageTagged(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.tagged"
    name: str


class ImageUntagged(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.untagged"
    name: str


class ImageRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.removed"


# --- builds (handler "build") ---------------------------------------------------------------


class BuildImage(Command[BuildResult], frozen=True, kw_only=True):
    """Build from a context directory on the daemon's host (the streaming route POST /v1/build
    takes an uploaded context tar instead and streams progress)."""

    topic: ClassVar[str] = "image.build"
    context: str
    options: BuildRequest = msgspec.field(default_factory=BuildRequest)


class PruneBuildCache(Command[BuildCachePruned], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.build_cache_prune"


class ImageBuilt(Fact, frozen=True, kw_only=True):
    """`id` is the image id; `names` its tags."""

    topic: ClassVar[str] = "image.built"
    names: list[str] = []


# --- registries, archives, image maintenance (handlers "registry" and "archives") -----------


class PullImage(Command[PullResult], frozen=True, kw_only=True):
    """Pull `reference` (the streaming route POST /v1/images/pull reports progress too).
    `login` comes from the client's auth.json; `insecure` allows plain HTTP to this host."""

    topic: ClassVar[str] = "image.pull"
    reference: str
    login: RegistryLogin | None = None
    insecure: bool = False


class PushImage(Command[PushResult], frozen=True, kw_only=True):
    """Push the local image `image` to the registry its name (or `target`) points at."""

    topic: ClassVar[str] = "image.push"
    image: str
    target: str = ""
    login: RegistryLogin | None = None
    insecure: bool = False


class CheckRegistryLogin(Command[None], frozen=True, kw_only=True):
    """`carte login`: check that `host` accepts `login` (the client then keeps it)."""

    topic: ClassVar[str] = "image.login"
    host: str
    login: RegistryLogin
    insecure: bool = False


class CommitContainer(Command[CommitResult], frozen=True, kw_only=True):
    """A container's changes (its overlay upper dir) as a new layer on its image."""

    topic: ClassVar[str] = "image.commit"
    container: str
    reference: str = ""
    author: str = ""
    message: str = ""
    changes: list[str] = []
    pause: bool = True


class ShowImageHistory(Command[list[HistoryEntry]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.history"
    ref: str


class PruneImages(Command[ImagePruneResult], frozen=True, kw_only=True):
    """Remove untagged images no container uses; with `all`, every image no container uses."""

    topic: ClassVar[str] = "image.prune"
    all: bool = False


class GetDiskUsage(Command[list[DiskUsageRow]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "system.df"


class ImagePulled(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.pulled"
    name: str


class ImagePushed(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.pushed"
    name: str
    manifest_digest: str


class ImageLoaded(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.loaded"
    names: list[str] = []


class ImageCommitted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.committed"
    name: str
    container: str


# --- stacks (handler "stacks") -------------------------------------------------------------
# A service is named by its stack and its name. Replicas are containers labelled
# com.carte.stack/service/replica/revision (carte.api.stacks) on the network "<stack>_default"
# (and the manifest's networks, named "<stack>_<net>"). Facts about a service carry
# id "<stack>_<service>".


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


class InspectService(Command[ServiceDetails], frozen=True, kw_only=True):
    topic: ClassVar[str] = "service.inspect"
    stack: str
    service: str


class ScaleService(Command[None], frozen=True, kw_only=True):
    """Set a service's desired replica count (the autoscaler calls this too); the reconciler
    starts or stops replicas. `replicas` < 0: `InvalidArgument`."""

    topic: ClassVar[str] = "service.scale"
    stack: str
    service: str
    replicas: int


class UpdateServiceResources(Command[None], frozen=True, kw_only=True):
    """Record new limits for a service in its desired state without replacing replicas (the
    services handler applies them live with UpdateContainer). Fields left 0 keep their value."""

    topic: ClassVar[str] = "service.update_resources"
    stack: str
    service: str
    resources: Resources


class GetRollout(Command[Rollout], frozen=True, kw_only=True):
    topic: ClassVar[str] = "rollout.status"
    stack: str
    service: str


class ListRevisions(Command[list[RevisionSummary]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "rollout.history"
    stack: str
    service: str


class UndoRollout(Command[Rollout], frozen=True, kw_only=True):
    """Roll a service back to `to_revision` (0: the one before the current)."""

    topic: ClassVar[str] = "rollout.undo"
    stack: str
    service: str
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


def event_name(event: Event | type[Event]) -> str:
    """The tag of an event or event class (its class name)."""
    cls: Any = event if isinstance(event, type) else type(event)
    return str(cls.__struct_config__.tag)


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
