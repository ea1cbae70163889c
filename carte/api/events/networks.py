"""Networks and network policies (handler "network")."""

from typing import ClassVar, Literal

import msgspec

from carte.api.containers import Endpoint, PortSpec
from carte.api.events.base import Command, Fact
from carte.api.networks import Network, NetworkPolicy, NetworkPruneResult

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
    labels: dict[str, str] = {}
    """The container's labels, for network policies' selectors."""
    mac: str = ""
    """The interface's MAC address ("" = one derived from its IP address)."""
    default_route: bool = True
    """False for a network joined with `network connect` (joined again at a start)."""


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
    options: dict[str, str] = {}
    """Driver options (``-o KEY=VALUE``, Compose ``driver_opts``): ``encrypted`` ("" or
    true) asks for node-to-node encryption of an overlay network."""


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


class ConnectNetwork(Command[Endpoint | None], frozen=True, kw_only=True):
    """Join a container to one more network (no default route through it), again at each of
    its starts; a running one joins at once (its endpoint), a stopped one at its next start
    (None)."""

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


# --- overlay networks (handler "overlay" answers, handler "network" programs the host) -----


class OverlayEndpoint(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """One container on an overlay network, in the cluster-wide endpoint catalogue."""

    node: str
    container_id: str
    """"" for the node's own address on the network (its bridge: VIP replies come to it)."""
    network: str
    ip: str
    mac: str
    names: list[str] = []
    """What DNS answers with `ip` on the network (name, hostname, aliases, short id)."""
    name: str = ""
    labels: dict[str, str] = {}
    """The container's name and labels, for the network's policies on every node."""
    health: str = ""
    """Its healthcheck's last verdict on its node ("" none yet or no healthcheck), so a
    replica turning unhealthy leaves every node's balancing without waiting for its
    agent's status report."""


class OverlayPeer(msgspec.Struct, frozen=True, kw_only=True):
    """A container on another node, as this node's VXLAN device must know it."""

    ip: str
    mac: str
    underlay: str
    """The address frames for it are sent to (its node's, or a tunnel's)."""
    names: list[str] = []
    name: str = ""
    labels: dict[str, str] = {}


class OverlayPort(msgspec.Struct, frozen=True, kw_only=True):
    port: int
    target_port: int
    proto: Literal["tcp", "udp"] = "tcp"
    published: bool = False
    host_ip: str = ""
    mode: Literal["ingress", "host"] = "ingress"
    """A published port: on every node (ingress), or only where a replica runs (host)."""


class OverlayService(msgspec.Struct, frozen=True, kw_only=True):
    """A service of the cluster on an overlay network: its VIP, ports and ready replicas'
    addresses on any node."""

    key: str
    """``<stack>_<service>``."""
    stack: str = ""
    network: str
    """The network holding the VIP."""
    vip: str
    networks: list[str] = []
    """Every network its replicas are on (DNS answers its names with the VIP on each)."""
    names: list[str] = []
    ports: list[OverlayPort] = []
    backends: list[str] = []


class OverlaySpec(msgspec.Struct, frozen=True, kw_only=True):
    """Where an overlay network sits: its VNI and subnet (cluster-wide), this node's slice of
    it and this node's underlay address."""

    vni: int
    subnet: str
    gateway: str
    slice: str
    underlay: str
    """This node's VXLAN address: its cluster address, or its WireGuard tunnel's address when
    the network is encrypted."""
    encrypted: bool = False
    """Node-to-node traffic of this network goes through WireGuard tunnels."""


class AllocateOverlay(Command[OverlaySpec | None], frozen=True, kw_only=True):
    """The overlay of network `name` for this node, allocated in the cluster's store when
    new (`subnet`: the one asked for, or this node's proposal); None outside a cluster."""

    topic: ClassVar[str] = "overlay.allocate"
    name: str
    subnet: str
    asked: bool = False
    """Whether `subnet` was given by the user (then it must match an existing overlay's)."""
    alternatives: list[str] = []
    """More free subnets of this node's pools, in order, for when `subnet` (not asked)
    overlaps another overlay network."""
    encrypted: bool = False
    """Asked with ``-o encrypted=true``: refused if the cluster has the network in clear (a
    network made encrypted elsewhere is encrypted here too, asked or not)."""


class KeyRotation(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of `RotateOverlayKeys`: the new key generation and which nodes use it."""

    generation: int
    rotated: list[str] = []
    """Nodes that published a key of this generation."""
    pending: list[str] = []
    """Nodes that had not yet when the wait ended (their tunnels keep the old key meanwhile)."""


class RotateOverlayKeys(Command[KeyRotation], frozen=True, kw_only=True):
    """Give every node of the cluster a new WireGuard key pair (``carte network rotate-keys``);
    waits up to `timeout` seconds for the nodes to publish their new public keys."""

    topic: ClassVar[str] = "overlay.rotate_keys"
    timeout: float = 30.0


class ListOverlayEndpoints(Command[list[OverlayEndpoint]], frozen=True, kw_only=True):
    """This node's containers on overlay networks (node left empty)."""

    topic: ClassVar[str] = "network.overlay.endpoints"


class SetOverlayPeers(Command[None], frozen=True, kw_only=True):
    """Program every local overlay network's VXLAN device with exactly these peers
    (keyed by network name; a network not named gets none)."""

    topic: ClassVar[str] = "network.overlay.peers"
    peers: dict[str, list[OverlayPeer]]
    services: list[OverlayService] = []
    """Every service of the cluster on an overlay network (those on networks this node has
    get their VIP, names and load balancing here)."""
    policies: dict[str, list[NetworkPolicy]] = {}
    """The policies of each overlay network on the control plane: they hold on every node,
    beside the node's own."""


class OverlayEndpointsChanged(Fact, frozen=True, kw_only=True):
    """The local members of overlay network `network` changed (all of them, node empty)."""

    topic: ClassVar[str] = "network.overlay.changed"
    network: str
    endpoints: list[OverlayEndpoint]
