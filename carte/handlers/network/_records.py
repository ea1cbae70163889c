"""What the network handler keeps in the state store, and how it names host resources.

One record per network at ``networks/<name>``; its endpoints (the containers attached) hold
the addresses handed out, so the store is the IPAM: an allocator rebuilt from a record after
a restart never repeats an address in use. Host names (bridge, nft table) are derived from the
daemon's root, so several daemons on one host never share them.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import msgspec

from carte.api.containers import PortSpec
from carte.api.networks import NetworkAddressing, NetworkPolicy

PREFIX = "networks/"
DEFAULT_NETWORK = "bridge"
DEFAULT_NAMES = ("bridge", "default")
"""`run --network default` and `--network bridge` both mean the default network."""
RESERVED = ("none", "host", *DEFAULT_NAMES)
PRODUCTION_ROOT = Path("/var/lib/carte")


class EndpointRecord(msgspec.Struct, kw_only=True):
    """One container on one network, as made on the host."""

    container_id: str
    name: str
    hostname: str
    aliases: list[str] = []
    ip: str
    mac: str
    host_ifname: str
    ifname: str = "eth0"
    ports: list[PortSpec] = []
    labels: dict[str, str] = {}


class NetworkRecord(NetworkAddressing, kw_only=True, forbid_unknown_fields=False):
    policies: list[NetworkPolicy] = []
    endpoints: dict[str, EndpointRecord] = {}
    """Keyed by container id."""
    service_names: dict[str, str] = {}
    """DNS names of services (their VIPs) on this network, from `SetServiceAddress`."""
    vni: int = 0
    """An overlay network's VXLAN id (0: a bridge of this node only)."""
    slice: str = ""
    """An overlay network's slice of `subnet` this node hands addresses out of."""
    underlay: str = ""
    """An overlay network's local VXLAN address (this node's cluster address)."""

    @property
    def is_overlay(self) -> bool:
        return self.vni > 0

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_NETWORK

    @property
    def subnet_net(self) -> IPv4Network:
        return IPv4Network(self.subnet)

    @property
    def gateway_ip(self) -> IPv4Address:
        return IPv4Address(self.gateway)

    @property
    def has_bridge(self) -> bool:
        """The default network's bridge exists only while containers use it."""
        return not self.is_default or bool(self.endpoints)


record_decoder = msgspec.json.Decoder(NetworkRecord)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def nft_table_name(root: Path) -> str:
    """``carte`` for the production root, ``carte-<hash of root>`` for any other daemon."""
    return "carte" if root == PRODUCTION_ROOT else f"carte-{_digest(str(root))[:10]}"


def default_bridge_name(root: Path, configured: str) -> str:
    """The configured name, else ``carte0`` for the production root, else per root."""
    if configured:
        return configured
    return "carte0" if root == PRODUCTION_ROOT else f"cb{_digest(str(root))[:10]}"


def bridge_name(root: Path, network: str) -> str:
    """A user-defined network's bridge: ``cbr-`` and 11 hex digits of root and name."""
    return f"cbr-{_digest(f'{root}/{network}')[:11]}"
