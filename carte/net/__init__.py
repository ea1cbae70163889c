"""carte.net — Carte's networking library: IPAM, bridges and veths, published ports, nftables.

Synchronous, no trio and no bus; the daemon's network handler calls it from worker threads.
Importing this package does not import pyroute2 (slow to import); `carte.net.links` does.
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
