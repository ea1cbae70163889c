"""carte.net — Carte's networking library: IPAM, bridges and veths, published ports, nftables.

Synchronous, no trio and no bus; the daemon's network handler calls it from worker threads
(one `links.LinkControl` at a time: wrap its calls in a CapacityLimiter(1)). Importing this
package does not import pyroute2 (slow to import); `carte.net.links` does.

How the handler uses it:
* network create: ``choose_subnet(links.host_networks() + store subnets)`` or ``parse_subnet``
  + ``check_subnet_free``; ``default_gateway`` or ``parse_address(..., what="gateway")``;
  ``links.ensure_bridge(name, gateway/len, links.uplink_mtu())``;
  ``sysctl.enable_route_localnet(bridge)``; ``sysctl.enable_ip_forward()`` (log when True).
* container start: ``AddressAllocator(subnet, gateway, stored_addresses).allocate(--ip)``,
  persist ``allocator.allocated``; ``links.connect(pid, bridge=..., host_ifname=
  links.host_veth_name(cid, net), address=..., gateway=..., mtu=...)`` before the container
  runs; ports: ``parse_publish`` + ``check_port_free`` / ``pick_free_port``; after the
  rules are applied, ``conntrack.forget_flows(port, "udp")`` for each published UDP port.
* any change: ``nft.apply(Ruleset(table=<per-daemon name>, networks=...))`` rebuilds the
  whole table atomically (deletes it when no network is left); call it on start-up too,
  and warn about each of ``nft.forward_drop_chains()`` (e.g. Docker's FORWARD DROP).
  Policies need ``sysctl.enable_bridge_netfilter()``; read denied counts with
  ``nft.denied_counts(table)`` (keyed by bridge).
* container stop / network rm: ``links.delete_link(host_ifname | bridge)`` (idempotent),
  ``allocator.release(address)``, then ``nft.apply`` again.
"""

from carte.net.ipam import (
    DEFAULT_POOLS,
    AddressAllocator,
    AddressPool,
    check_subnet_free,
    choose_subnet,
    default_gateway,
    parse_address,
    parse_pool,
    parse_subnet,
)
from carte.net.ports import PortRequest, check_port_free, parse_publish, pick_free_port
from carte.net.rules import NetworkRules, PolicyRule, PublishedPort, Ruleset, render

__all__ = [
    "DEFAULT_POOLS",
    "AddressAllocator",
    "AddressPool",
    "NetworkRules",
    "PolicyRule",
    "PortRequest",
    "PublishedPort",
    "Ruleset",
    "check_port_free",
    "check_subnet_free",
    "choose_subnet",
    "default_gateway",
    "parse_address",
    "parse_pool",
    "parse_publish",
    "parse_subnet",
    "pick_free_port",
    "render",
]
