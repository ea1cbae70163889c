"""Networks and network policies (handler "network")."""

from typing import ClassVar

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
