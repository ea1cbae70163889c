"""The network handler's side of overlay networks (the pure parts): what this node reports
of a network to the cluster's endpoint catalogue, the node's own address on it, and the
cluster's services as this node balances them.

An overlay network's bridges share one gateway address on every node, so a connection to
a service VIP balanced to a replica on another node cannot be masqueraded to the gateway:
the reply would stay on the replica's node. Each node therefore holds one more address on
the bridge, `node_address` (an edge of its slice, never handed to a container), connections
to VIPs leaving through the bridge are SNATed to it, and the node reports it (with the
bridge's MAC) like a container, so every other node's VXLAN device sends replies back.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from carte.api.errors import InvalidArgument
from carte.api.events.networks import OverlayEndpoint, OverlayService
from carte.handlers.network._records import EndpointRecord, NetworkRecord

TABLE_SUFFIX = "-ov"
"""Table ``ip <network table>-ov``: the cluster's services on this node's overlay bridges."""
BEFORE = 20
"""Its NAT chains run ahead of the services handler's table (which runs 10 ahead)."""


_TRUE = ("", "true", "1", "yes")
_FALSE = ("false", "0", "no")


def encrypted_option(network: str, options: dict[str, str]) -> bool:
    """Whether driver `options` ask for encryption; `InvalidArgument` for another option or
    a value that is not a boolean."""
    for key, value in options.items():
        if key != "encrypted":
            raise InvalidArgument(
                f'network "{network}": option "{key}" is unknown; Carte knows "encrypted"'
            )
        if value.lower() not in (*_TRUE, *_FALSE):
            raise InvalidArgument(f'network "{network}": encrypted="{value}" is not true or false')
    return options.get("encrypted", "false").lower() in _TRUE


def node_address(network: NetworkRecord) -> IPv4Address | None:
    """This node's own address on overlay `network`: the last address of its slice (the
    first one for the subnet's last slice); None when the slice is the whole subnet."""
    part, whole = IPv4Network(network.slice), network.subnet_net
    if part.broadcast_address != whole.broadcast_address:
        return part.broadcast_address
    if part.network_address != whole.network_address:
        return part.network_address
    return None


def endpoint_names(endpoint: EndpointRecord) -> list[str]:
    names = {endpoint.name, endpoint.hostname, endpoint.container_id[:12], *endpoint.aliases}
    return sorted({n.lower() for n in names if n})


def overlay_endpoints(network: NetworkRecord, bridge_mac: str) -> list[OverlayEndpoint]:
    """What this node reports of `network`: its containers and its own address."""
    found = [
        OverlayEndpoint(
            node="",
            container_id=e.container_id,
            network=network.name,
            ip=e.ip,
            mac=e.mac,
            names=endpoint_names(e),
            name=e.name,
            labels=e.labels,
        )
        for e in network.endpoints.values()
    ]
    own = node_address(network)
    if own is not None:
        found.append(
            OverlayEndpoint(
                node="", container_id="", network=network.name, ip=str(own), mac=bridge_mac
            )
        )
    return found


def balanced(
    services: Iterable[OverlayService], networks: dict[str, NetworkRecord]
) -> tuple[list[tuple[OverlayService, NetworkRecord]], dict[str, IPv4Address]]:
    """The services on `networks` (this node's overlay networks whose bridge is up), and
    the SNAT address of each of their bridges."""
    here = [(s, networks[s.network]) for s in services if s.network in networks]
    sources = {
        network.bridge: address
        for _, network in here
        if (address := node_address(network)) is not None
    }
    return here, sources
