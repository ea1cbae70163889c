"""The cluster (handler "membership"; the scheduler's facts are the scheduler's)."""

from typing import ClassVar

from carte.api.cluster import (
    Availability,
    ClusterInitResult,
    ClusterRollout,
    ClusterStatus,
    FileContent,
    Leadership,
    NewToken,
    NodeRecord,
    Placement,
    ServicePlacement,
    TokenInfo,
)
from carte.api.events.base import Command, Fact

__all__ = [
    "ClusterConfigured",
    "ClusterRolloutChanged",
    "CreateJoinToken",
    "GetClusterStatus",
    "GetLeadership",
    "IdentifyPeer",
    "InitCluster",
    "InspectNode",
    "JoinCluster",
    "LeaderElected",
    "LeadershipLost",
    "LeaveCluster",
    "ListJoinTokens",
    "ListNodes",
    "ListPlacements",
    "NodeDown",
    "NodeJoined",
    "NodeRemoved",
    "NodeUp",
    "NodeUpdated",
    "PlaceService",
    "ReadServiceFiles",
    "RemoveNode",
    "ReplicaScheduled",
    "ReplicaUnschedulable",
    "RevokeJoinToken",
    "UpdateNode",
]


# --- commands (handler "membership") ------------------------------------------------------


class InitCluster(Command[ClusterInitResult], frozen=True, kw_only=True):
    """Make this daemon a control plane: a new cluster (CA, token) or, when its etcd holds
    one already, another control plane of that cluster."""

    topic: ClassVar[str] = "cluster.init"
    advertise: str = ""
    listen: str = ""
    name: str = ""
    admin: str = "admin"
    """Name in the admin client certificate handed back."""


class JoinCluster(Command[NodeRecord], frozen=True, kw_only=True):
    """Join this daemon to a cluster as a worker (`carte node join`)."""

    topic: ClassVar[str] = "cluster.join"
    token: str
    server: str
    servers: list[str] = []
    """More control-plane addresses (``--server`` repeated): tried in turn to join, and
    failed over to later."""
    name: str = ""
    labels: dict[str, str] = {}
    advertise: str = ""


class LeaveCluster(Command[bool], frozen=True, kw_only=True):
    """Leave the cluster (install.sh --uninstall): a worker asks its control plane to drain
    and remove it, then forgets its membership. The result: whether the control plane
    drained it (False: it was unreachable or had removed it already; left locally)."""

    topic: ClassVar[str] = "cluster.leave"
    drain_timeout: float = 60.0


class CreateJoinToken(Command[NewToken], frozen=True, kw_only=True):
    topic: ClassVar[str] = "cluster.token.create"
    rotate: bool = False
    """Revoke every active token first."""
    ttl: float = 0.0
    """Seconds; 0: valid until revoked."""


class ListJoinTokens(Command[list[TokenInfo]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "cluster.token.list"


class RevokeJoinToken(Command[TokenInfo], frozen=True, kw_only=True):
    topic: ClassVar[str] = "cluster.token.revoke"
    id: str


class GetClusterStatus(Command[ClusterStatus], frozen=True, kw_only=True):
    topic: ClassVar[str] = "cluster.status"


class GetLeadership(Command[Leadership], frozen=True, kw_only=True):
    """Whether this control plane leads (the scheduler runs only while it does)."""

    topic: ClassVar[str] = "cluster.leadership"


class IdentifyPeer(Command[str], frozen=True, kw_only=True):
    """Check a TCP client's certificate (PEM) against the CA and the revocation list;
    the result is ``ROLE/NAME``. Raises permission_denied for a refused one."""

    topic: ClassVar[str] = "cluster.identify"
    cert: str


class ListNodes(Command[list[NodeRecord]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "node.list"


class InspectNode(Command[NodeRecord], frozen=True, kw_only=True):
    topic: ClassVar[str] = "node.inspect"
    name: str


class UpdateNode(Command[NodeRecord], frozen=True, kw_only=True):
    topic: ClassVar[str] = "node.update"
    name: str
    label_add: dict[str, str] = {}
    label_rm: list[str] = []
    availability: Availability | None = None


class RemoveNode(Command[None], frozen=True, kw_only=True):
    """Remove a node and revoke its certificate (``force``: even while it is ready)."""

    topic: ClassVar[str] = "node.remove"
    name: str
    force: bool = False


# --- facts --------------------------------------------------------------------------------


class ClusterConfigured(Fact, frozen=True, kw_only=True):
    """This daemon's cluster settings (at start, after init, join or leave); ``id`` is its
    node name. The api handler serves TCP on ``listen`` with the bundle in ``certs``."""

    topic: ClassVar[str] = "cluster.configured"
    role: str = "none"
    listen: str = ""
    insecure: bool = False
    certs: str = ""
    """Directory holding ca.pem, cert.pem and key.pem ('' : none yet)."""


class NodeJoined(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "node.joined"
    node: NodeRecord


class NodeDown(Fact, frozen=True, kw_only=True):
    """The node's lease expired: no heartbeat for its TTL."""

    topic: ClassVar[str] = "node.down"


class NodeUp(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "node.up"


class NodeRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "node.removed"


class NodeUpdated(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "node.updated"
    node: NodeRecord


class LeaderElected(Fact, frozen=True, kw_only=True):
    """``id`` is the new leader's name; ``fence`` the store revision it won at."""

    topic: ClassVar[str] = "cluster.leader"
    is_self: bool = False
    fence: int = 0


class LeadershipLost(Fact, frozen=True, kw_only=True):
    """This daemon no longer leads (its lease was lost or it is stopping)."""

    topic: ClassVar[str] = "cluster.leadership_lost"


class ClusterRolloutChanged(Fact, frozen=True, kw_only=True):
    """The leader's scheduler moved a rolling update on (``id``: STACK_SERVICE)."""

    topic: ClassVar[str] = "cluster.rollout"
    rollout: ClusterRollout


class ReplicaScheduled(Fact, frozen=True, kw_only=True):
    """``id`` is the replica's container name; ``node`` '' with ``reason`` while pending."""

    topic: ClassVar[str] = "replica.scheduled"
    stack: str = ""
    service: str = ""
    node: str = ""
    reason: str = ""


class ReplicaUnschedulable(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "replica.unschedulable"
    stack: str = ""
    service: str = ""
    reason: str = ""


# --- commands (handler "scheduler") -------------------------------------------------------


class PlaceService(Command[bool], frozen=True, kw_only=True):
    """The stacks handler's seam: on a control plane, record ``placement`` (``remove``: the
    service is gone) for the leader's scheduler and answer True; elsewhere answer False (the
    stacks handler then runs the replicas locally, as on a single machine)."""

    topic: ClassVar[str] = "cluster.place"
    placement: ServicePlacement
    remove: bool = False


class ReadServiceFiles(Command[list[FileContent]], frozen=True, kw_only=True):
    """The secrets and configs a service mounts, with their content (answered by the stacks
    handler of a control plane, for the node that runs one of its replicas). Not on the API:
    a node reads its own replicas' files at ``GET /v1/cluster/files``."""

    topic: ClassVar[str] = "service.files"
    public: ClassVar[bool] = False
    stack: str
    service: str


class ListPlacements(Command[list[Placement]], frozen=True, kw_only=True):
    """Where the replicas of a stack (or of one of its services) are, on a control plane:
    each with its node (or pending with the reason) and what that node's agent reports."""

    topic: ClassVar[str] = "cluster.placements"
    stack: str = ""
    service: str = ""
