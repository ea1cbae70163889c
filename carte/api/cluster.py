"""Wire schema of the cluster: nodes, join, heartbeat, tokens, leadership, assignments.

Times are RFC 3339 strings in UTC (`carte.api.timestamps`); sizes bytes; CPUs a float.
Store keys on the control plane (etcd): ``cluster/members/<name>`` (the node's `NodeRecord`,
kept until ``node rm``; its ``status`` says ready or down), ``cluster/nodes/<name>`` (the
same record while the node is alive: bound to the node's lease, deleted by etcd when the
lease expires), ``cluster/leader`` (`LeaderRecord`, bound to the leader's lease),
``cluster/ca`` (`CaRecord`), ``cluster/tokens`` (the `TokenBook`), ``cluster/revoked``
(the `RevocationList`), ``cluster/assignments/<node>/<name>`` (`Assignment`),
``cluster/status/<node>/<name>`` (`ReplicaStatus`) and ``cluster/load/<name>`` (the
`NodeLoad` of the node's last heartbeat, bound to its lease and apart from its record, so a
load that moves on every heartbeat changes nothing that follows the members).
"""

from typing import Any, Literal

import msgspec

ASSIGNMENT_LABEL = "com.carte.cluster.assignment"
"""Label of a container a node's agent runs for an assignment (its value: the name)."""

NodeRole = Literal["control", "worker"]
Availability = Literal["active", "drain"]
NodeState = Literal["ready", "down"]
ClusterRole = Literal["none", "control", "worker"]
UpdateOrder = Literal["stop-first", "start-first"]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of cluster bodies: frozen, keyword-only, unknown fields are a 400 naming them."""


class Capacity(_Wire, frozen=True, kw_only=True):
    """What a node offers the scheduler."""

    cpus: float = 0.0
    memory: int = 0
    """Bytes."""


class NodeLoad(_Wire, frozen=True, kw_only=True):
    """How busy a node is, as its last heartbeat reported it."""

    load1: float = 0.0
    """The 1-minute load average."""
    cpus: int = 0
    """CPUs online on the machine."""
    memory_used: int = 0
    """Bytes in use (MemTotal - MemAvailable)."""
    memory_total: int = 0

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else 0.0


class NodeRecord(_Wire, frozen=True, kw_only=True):
    """A member of the cluster, as `carte node ls|inspect` shows it."""

    name: str
    addresses: list[str] = []
    labels: dict[str, str] = {}
    capacity: Capacity = Capacity()
    role: NodeRole = "worker"
    availability: Availability = "active"
    status: NodeState = "ready"
    joined: str = ""
    seen: str = ""
    """Last heartbeat the control plane took."""
    serial: str = ""
    """Serial (hex) of the node's certificate; revoked by ``node rm``."""
    lease: int = 0
    """The etcd lease ``cluster/nodes/<name>`` is bound to (refreshed on heartbeat)."""
    api: str = ""
    """A control plane's address for nodes and clients (``tcp://ADVERTISE:PORT``)."""
    load: NodeLoad | None = None
    """From the node's last heartbeat (``cluster/load/<name>``); None while it is down."""


class ServiceFile(_Wire, frozen=True, kw_only=True):
    """A secret or config a replica mounts (its content travels apart, only to the node
    that runs the replica: ``GET /v1/cluster/files``)."""

    kind: str
    """``secrets`` or ``configs``."""
    name: str
    target: str
    mode: int = 0o444
    uid: int = 0
    gid: int = 0


class FileContent(_Wire, frozen=True, kw_only=True):
    kind: str
    name: str
    content: bytes = b""


class Assignment(_Wire, frozen=True, kw_only=True):
    """One replica the scheduler placed on a node (``cluster/assignments/<node>/<name>``)."""

    node: str
    stack: str
    service: str
    replica: int
    name: str
    """The container name the agent creates."""
    revision: str
    request: dict[str, Any] = {}
    """The CreateContainer fields the agent creates the container with."""
    fence: int = 0
    """The scheduler's lease revision when it wrote this (see `LeaderRecord`)."""
    restart: Literal["none", "on-failure", "any"] = "any"
    """When the agent replaces an exited replica (Compose's restart / restart_policy)."""
    order: UpdateOrder = "stop-first"
    """How the agent replaces a copy of another revision: stop it first, or start this one
    beside it and stop the old one once this one is ready."""
    since: float = 0.0
    """Unix time the scheduler assigned this revision (a rollout's readiness deadline)."""
    joins: str = ""
    """``network_mode: service:NAME``: the service (same stack) whose replica on this node
    the container's network joins (the agent resolves it)."""
    mounts_from: list[str] = []
    """``volumes_from``: ``SERVICE`` or ``SERVICE:ro`` whose replica on this node lends its
    mounts (the agent resolves them)."""
    files: list[ServiceFile] = []
    """Secrets and configs the agent fetches, writes under its run root and binds read-only."""


class ReplicaStatus(_Wire, frozen=True, kw_only=True):
    """What a node's agent reports of one assigned replica."""

    node: str
    name: str
    container_id: str = ""
    state: Literal["pending", "running", "exited", "failed"] = "pending"
    ready: bool = False
    reason: str = ""
    updated: str = ""
    revision: str = ""
    """The assignment revision the container runs (the scheduler moves on once it is ready)."""
    ip: str = ""
    """The container's address on its first network."""
    since: str = ""
    """When it started (running) or stopped (exited): ``service ps`` says "Up 3 minutes"."""
    exit_code: int = 0
    health: str = ""
    """Its health check's verdict ('' without one)."""


class JoinRequest(_Wire, frozen=True, kw_only=True):
    """POST /v1/cluster/join: the token proves the node; the CSR carries its own key."""

    token: str
    name: str
    csr: str
    addresses: list[str] = []
    labels: dict[str, str] = {}
    capacity: Capacity = Capacity()


class JoinReply(_Wire, frozen=True, kw_only=True):
    cert: str
    """The node's certificate (PEM), signed by the cluster CA."""
    ca: str
    """The cluster CA certificate (PEM)."""
    servers: list[str] = []
    """Every control plane alive (``tcp://HOST:PORT``): the node fails over among them."""


class Heartbeat(_Wire, frozen=True, kw_only=True):
    """POST /v1/cluster/heartbeat from a node (its certificate must name ``name``)."""

    name: str
    capacity: Capacity = Capacity()
    addresses: list[str] = []
    load: NodeLoad | None = None


class HeartbeatReply(_Wire, frozen=True, kw_only=True):
    ttl: int
    """Seconds the control plane keeps the node alive without another heartbeat."""
    servers: list[str] = []
    """Every control plane alive now (the node adds the new ones to those it fails over to)."""


class Leave(_Wire, frozen=True, kw_only=True):
    """POST /v1/cluster/leave from a node: drain it, then remove it (revoking its cert)."""

    name: str
    drain_timeout: float = 60.0
    """Seconds to wait for its assignments to move off before it is removed anyway."""


class CaRecord(_Wire, frozen=True, kw_only=True):
    """``cluster/ca``: the cluster CA (its key stays in etcd, on the control plane)."""

    cert: str
    key: str


class LeaderRecord(_Wire, frozen=True, kw_only=True):
    """``cluster/leader``: who leads, bound to the leader's lease."""

    name: str
    address: str = ""
    since: str = ""


class Leadership(_Wire, frozen=True, kw_only=True):
    """This daemon's view of the election (GetLeadership)."""

    leader: str = ""
    """Name of the leading control plane ('' while none is known)."""
    is_leader: bool = False
    fence: int = 0
    """Store revision at which this daemon won (0 unless it leads): newer writes fence
    older leaders' ones."""


class TokenInfo(_Wire, frozen=True, kw_only=True):
    id: str
    created: str
    expires: str = ""
    state: Literal["active", "expired", "revoked"] = "active"


class NewToken(_Wire, frozen=True, kw_only=True):
    id: str
    token: str


class Credentials(_Wire, frozen=True, kw_only=True):
    """A client bundle the CLI writes to ~/.carte (or CARTE_CERT_PATH)."""

    ca: str
    cert: str
    key: str


class ClusterInitResult(_Wire, frozen=True, kw_only=True):
    name: str
    token: str
    """A join token ('' when this daemon joined an existing cluster as another control plane)."""
    ca_hash: str
    listen: str = ""
    advertise: str = ""
    admin: Credentials


class ClusterStatus(_Wire, frozen=True, kw_only=True):
    role: ClusterRole = "none"
    name: str = ""
    server: str = ""
    """A worker's control plane (the one it uses now)."""
    servers: list[str] = []
    """Every control plane a worker knows, the one it uses first."""
    listen: str = ""
    leader: str = ""
    is_leader: bool = False
    ca_hash: str = ""
    nodes: int = 0
    ready: int = 0
    down: int = 0


# --- scheduling (handler "scheduler") -------------------------------------------------------


class ServicePlacement(_Wire, frozen=True, kw_only=True):
    """``cluster/services/<stack>/<service>``: what the stacks handler of a control plane asks
    the scheduler to place (`PlaceService`); the leader's scheduler turns it into assignments."""

    stack: str
    service: str
    revision: int
    replicas: int
    cpus: float = 0.0
    """Reserved CPUs per replica (deploy.resources.reservations.cpus)."""
    memory: int = 0
    """Reserved bytes per replica (deploy.resources.reservations.memory)."""
    constraints: list[str] = []
    max_per_node: int = 0
    restart: Literal["none", "on-failure", "any"] = "any"
    """When an exited replica is replaced (Compose's restart / deploy.restart_policy)."""
    parallelism: int = 1
    """Replicas replaced at a time when the revision changes (0: all at once); a batch
    goes on once the new replicas are ready (deploy.update_config.parallelism)."""
    delay: float = 0.0
    """Seconds between batches (update_config.delay)."""
    order: UpdateOrder = "stop-first"
    monitor: float = 5.0
    """Seconds a new replica must stay ready before it counts as updated."""
    failure_action: Literal["rollback", "pause", "continue"] = "rollback"
    max_failure_ratio: float = 0.0
    paused: bool = False
    """The rollout is paused or failed: no more replicas are replaced."""
    colocate: list[str] = []
    """Services of the stack whose node each replica must share (network_mode service:,
    volumes_from): only nodes running one of their replicas are eligible."""
    joins: str = ""
    mounts_from: list[str] = []
    files: list[ServiceFile] = []
    """As `Assignment`'s."""
    requests: list[dict[str, Any]] = []
    """The CreateContainer config of replica ``i + 1`` (a ContainerConfig as JSON)."""
    unplaceable: str = ""
    """Why the cluster cannot place this service ('' : it can); its replicas stay pending."""


class ClusterRollout(_Wire, frozen=True, kw_only=True):
    """``cluster/rollouts/<stack>/<service>``: the leader's scheduler's view of a service's
    latest rolling update. ``failed`` once more new replicas failed than
    max_failure_ratio lets through (failure_action continue never fails); the stacks
    handler then rolls back or pauses."""

    stack: str
    service: str
    revision: int
    state: Literal["progressing", "completed", "failed"] = "progressing"
    updated: int = 0
    """Replicas of this revision ready for the monitor window."""
    total: int = 0
    message: str = ""


class Placement(_Wire, frozen=True, kw_only=True):
    """`carte service ps` in a cluster: one replica, the node it is on and how it runs."""

    stack: str
    service: str
    replica: int
    name: str
    node: str = ""
    """'' while pending."""
    revision: str = ""
    state: Literal["pending", "assigned", "running", "exited", "failed"] = "pending"
    ready: bool = False
    container_id: str = ""
    reason: str = ""
    ip: str = ""
    status: str = ""
    """As `carte ps` words it ("Up 3 minutes (healthy)", "Exited (1) 2 seconds ago"), or
    "Pending" / "Assigned" before its node runs it."""
    cpus: float = 0.0
    """CPUs reserved for it on its node (its service's deploy.resources.reservations)."""
    memory: int = 0
    """Bytes reserved for it on its node."""
