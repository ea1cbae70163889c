"""Turning the stored networks into the packet filter's desired state (`carte.net.Ruleset`).

Policies name containers by label (``KEY=VALUE``, or ``name=CONTAINER``); here they become
the address sets of the members that match right now, so the table is rebuilt whenever a
member joins or leaves. Raises `InvalidArgument` for a malformed selector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address

from carte.api.errors import InvalidArgument
from carte.api.events.networks import OverlayPeer
from carte.api.networks import NetworkPolicy
from carte.handlers.network._records import EndpointRecord, NetworkRecord
from carte.net import NetworkRules, PolicyRule, PublishedPort, Ruleset
from carte.net.ports import ANY_ADDRESS

DENIED_LOG_PREFIX = "carte-denied "


def parse_selector(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` split in two; `InvalidArgument` naming the text otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise InvalidArgument(
            f'selector "{text}" is not LABEL=VALUE; write e.g. --from app=web (or name=CONTAINER)'
        )
    return key, value


def _matches(endpoint: EndpointRecord | OverlayPeer, selector: str) -> bool:
    key, value = parse_selector(selector)
    if key == "name":
        return endpoint.name == value
    return endpoint.labels.get(key) == value


def _members(
    network: NetworkRecord, selector: str, remote: Sequence[OverlayPeer]
) -> frozenset[IPv4Address]:
    """The addresses `selector` picks: of this node's members, and of an overlay network's
    containers on other nodes (`remote`)."""
    found: list[EndpointRecord | OverlayPeer] = [*network.endpoints.values(), *remote]
    return frozenset(IPv4Address(e.ip) for e in found if _matches(e, selector))


def _published(network: NetworkRecord) -> tuple[PublishedPort, ...]:
    return tuple(
        PublishedPort(
            host_port=port.host_port,
            container_ip=IPv4Address(endpoint.ip),
            container_port=port.container_port,
            proto=port.protocol,
            host_ip=IPv4Address(port.host_ip) if port.host_ip else ANY_ADDRESS,
        )
        for endpoint in network.endpoints.values()
        for port in endpoint.ports
    )


def network_rules(
    network: NetworkRecord,
    *,
    log_denied: bool,
    remote: Sequence[OverlayPeer] = (),
    cluster: Sequence[NetworkPolicy] = (),
) -> NetworkRules:
    """`remote`: an overlay network's containers on other nodes; `cluster`: its policies
    from the control plane (those with an id the network has already count once)."""
    own = {p.id for p in network.policies}
    policies = tuple(
        PolicyRule(
            sources=_members(network, policy.from_label, remote),
            destinations=_members(network, policy.to_label, remote),
            port=policy.port or None,
            proto=policy.protocol,
        )
        for policy in [*network.policies, *(p for p in cluster if p.id not in own)]
    )
    return NetworkRules(
        bridge=network.bridge,
        subnet=network.subnet_net,
        internal=network.internal,
        published=_published(network),
        policies=policies,
        log_prefix=DENIED_LOG_PREFIX if log_denied and policies else None,
        gateway=network.gateway_ip,
    )


def build_ruleset(
    table: str,
    networks: list[NetworkRecord],
    *,
    log_denied: bool,
    remote: Mapping[str, Sequence[OverlayPeer]] | None = None,
    cluster: Mapping[str, Sequence[NetworkPolicy]] | None = None,
) -> Ruleset:
    """Rules for `networks` (those whose bridge exists); `remote` and `cluster` per overlay
    network name (see `network_rules`)."""
    rules = (
        network_rules(
            n,
            log_denied=log_denied,
            remote=(remote or {}).get(n.name, ()) if n.is_overlay else (),
            cluster=(cluster or {}).get(n.name, ()) if n.is_overlay else (),
        )
        for n in networks
    )
    return Ruleset(table=table, networks=tuple(rules))
