"""Containers (handler "containers"), health checks and restart policies."""

from typing import ClassVar

from carte.api.containers import (
    ContainerConfig,
    ContainerDetails,
    ContainerLocation,
    ContainerStats,
    ContainerSummary,
    ContainerUsage,
    CreateResult,
    Endpoint,
    ExecResult,
    Health,
    HealthStatus,
    PruneResult,
    Resources,
    RestartPolicy,
    TopResult,
    WaitResult,
)
from carte.api.events.base import Command, Fact

# --- containers (handler "containers") ---------------------------------------------------
# Commands take a container reference: a full id, a unique id prefix, or a name.


class CreateContainer(Command[CreateResult], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.create"
    config: ContainerConfig


class ParkContainer(Command[None], frozen=True, kw_only=True):
    """Make a stopped container ready to start (its shim and process made, parked), so a
    client attaches before the start and misses nothing (`carte start -ai` of an exited
    container); a created, running or already parked one is left as it is."""

    topic: ClassVar[str] = "container.park"
    ref: str


class StartContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.start"
    ref: str


class StopContainer(Command[None], frozen=True, kw_only=True):
    """SIGTERM (or the stop signal), then SIGKILL after `timeout` s (config default 10)."""

    topic: ClassVar[str] = "container.stop"
    ref: str
    timeout: int | None = None
    signal: str = ""
    """This signal instead of the container's stop signal (`stop -s`)."""


class KillContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.kill"
    ref: str
    signal: str = "KILL"


class RestartContainer(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "container.restart"
    ref: str
    timeout: int | None = None
    signal: str = ""
    """This signal instead of the container's stop signal (`restart -s`)."""


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


class ListContainerUsage(Command[list[ContainerUsage]], frozen=True, kw_only=True):
    """Every container's image id and named volumes (for images, volumes and archives)."""

    topic: ClassVar[str] = "container.usage"


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


class SetContainerEndpoint(Command[None], frozen=True, kw_only=True):
    """Store that a running container joined network `network` as `endpoint` (None: left it)
    after it started (`carte network connect`/`disconnect`), so inspect lists every network
    it is on. The network handler sends it; a container no longer running is left as it is."""

    topic: ClassVar[str] = "container.set_endpoint"
    container_id: str
    network: str
    endpoint: Endpoint | None = None
    connected: bool = True
    """True: `network connect` (remembered, with `aliases` and `ip`, and joined again at each
    start; a stopped container is only remembered); False: `network disconnect`."""
    aliases: list[str] = []
    ip: str = ""


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
