"""Wire schema for networks and network policies: what `carte network ...` sends and shows.

Addresses are dotted IPv4 strings, subnets CIDR strings, times RFC 3339 in UTC.
"""

from typing import Literal

import msgspec


class _Wire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request/response bodies: unknown fields are a 400 naming the field."""


class NetworkPolicy(_Wire, kw_only=True):
    """Allow containers labelled `from_label` to reach those labelled `to_label` on a port.

    Labels are ``KEY=VALUE``; ``name=CONTAINER`` selects a container by name. `port` 0 means
    any port of `protocol`.
    """

    id: str = ""
    from_label: str
    to_label: str
    port: int = 0
    protocol: Literal["tcp", "udp"] = "tcp"


class NetworkMember(_Wire, kw_only=True):
    """A container attached to a network."""

    container_id: str
    name: str
    ip_address: str
    mac_address: str = ""
    aliases: list[str] = []


class NetworkAddressing(_Wire, kw_only=True):
    """What names a network and where it sits; `Network` shows it, the network handler's
    record stores it."""

    name: str
    id: str
    created: str
    bridge: str
    subnet: str
    gateway: str
    internal: bool = False
    labels: dict[str, str] = {}
    encrypted: bool = False
    """Node-to-node traffic goes through WireGuard tunnels (``-o encrypted=true``)."""


class Network(NetworkAddressing, kw_only=True):
    """`carte network inspect`: a network, its members, policies and denied-packet counts."""

    driver: str = "bridge"
    """"bridge", or "overlay" for a network spanning the cluster's nodes."""
    containers: list[NetworkMember] = []
    policies: list[NetworkPolicy] = []
    denied_packets: int = 0
    denied_bytes: int = 0


class NetworkPruneResult(_Wire, kw_only=True):
    deleted: list[str] = []
