"""IPAM: subnet choice around host routes, address allocation, persistence, bad input."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

import pytest

from carte.api.errors import Conflict, InvalidArgument
from carte.net.ipam import (
    AddressAllocator,
    AddressPool,
    check_subnet_free,
    choose_subnet,
    default_gateway,
    parse_address,
    parse_pool,
    parse_subnet,
)
from carte.net.links import LinkControl


def test_default_pool_starts_at_docker_bridge_subnet() -> None:
    assert choose_subnet([]) == IPv4Network("172.17.0.0/16")


def test_choice_skips_routes_and_networks_in_use_but_not_the_default_route() -> None:
    in_use = [
        IPv4Network("0.0.0.0/0"),
        IPv4Network("172.17.5.0/24"),
        IPv4Network("172.18.0.0/16"),
    ]
    assert choose_subnet(in_use) == IPv4Network("172.19.0.0/16")


def test_after_the_172_range_come_192_168_slash_20s() -> None:
    in_use = [IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/20")]
    assert choose_subnet(in_use) == IPv4Network("192.168.16.0/20")


def test_choice_avoids_what_is_really_on_this_host() -> None:
    with LinkControl() as links:
        host = links.host_networks()
    chosen = choose_subnet(host)
    assert not any(chosen.overlaps(net) for net in host if net.prefixlen > 0)


def test_exhausted_pools_are_a_conflict_with_a_fix() -> None:
    pools = [AddressPool(IPv4Network("10.9.0.0/23"), 24)]
    with pytest.raises(Conflict, match="network prune"):
        choose_subnet([IPv4Network("10.9.0.0/24"), IPv4Network("10.9.1.0/25")], pools)


def test_configured_pools_are_parsed() -> None:
    pool = parse_pool("10.10.0.0/16:24")
    assert choose_subnet([IPv4Network("10.10.0.0/24")], [pool]) == IPv4Network("10.10.1.0/24")
    with pytest.raises(InvalidArgument, match=re.escape('"10.10.0.0/16:8"')):
        parse_pool("10.10.0.0/16:8")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.5.0.0", "no prefix length"),
        ("10.5.0.1/24", "did you mean 10.5.0.0/24"),
        ("banana", "not an IPv4 CIDR"),
        ("10.5.0.0/33", "not an IPv4 CIDR"),
        ("10.5.0.0/31", "too small"),
    ],
)
def test_malformed_subnets_name_the_value(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as caught:
        parse_subnet(text)
    assert f'"{text}"' in caught.value.message
    assert "\n" not in caught.value.message


def test_overlapping_subnets_are_a_conflict_naming_the_other_network() -> None:
    with pytest.raises(Conflict, match=re.escape("overlaps 10.5.0.0/16 of backend")):
        check_subnet_free(IPv4Network("10.5.3.0/24"), {"backend": IPv4Network("10.5.0.0/16")})
    check_subnet_free(IPv4Network("10.6.0.0/24"), {"backend": IPv4Network("10.5.0.0/16")})


def test_gateway_and_ip_outside_the_subnet_are_refused() -> None:
    subnet = IPv4Network("10.5.0.0/24")
    with pytest.raises(InvalidArgument, match=re.escape('gateway "10.6.0.1" is outside subnet')):
        parse_address("10.6.0.1", subnet, what="gateway")
    with pytest.raises(InvalidArgument, match=re.escape('"10.5.0.255" is outside')):
        parse_address("10.5.0.255", subnet)
    with pytest.raises(InvalidArgument, match="not an IPv4 address"):
        parse_address("10.5.0.x", subnet)
    with pytest.raises(InvalidArgument, match="outside subnet"):
        AddressAllocator(subnet, IPv4Address("10.6.0.1"))


def test_fifty_allocations_are_distinct_and_skip_the_gateway() -> None:
    subnet = IPv4Network("10.5.0.0/24")
    allocator = AddressAllocator(subnet, default_gateway(subnet))
    handed = [allocator.allocate() for _ in range(50)]
    assert len(set(handed)) == 50
    assert default_gateway(subnet) not in handed
    assert handed[0] == IPv4Address("10.5.0.2")


def test_a_restarted_allocator_never_repeats_a_persisted_address() -> None:
    subnet = IPv4Network("10.5.0.0/24")
    gateway = default_gateway(subnet)
    first = AddressAllocator(subnet, gateway)
    before = {first.allocate() for _ in range(25)}
    persisted = sorted(first.allocated)  # what the daemon's store holds

    restarted = AddressAllocator(subnet, gateway, persisted)
    after = {restarted.allocate() for _ in range(25)}
    assert before.isdisjoint(after)
    assert len(before | after) == 50


def test_released_addresses_are_not_reused_at_once() -> None:
    subnet = IPv4Network("10.5.0.0/24")
    allocator = AddressAllocator(subnet, default_gateway(subnet))
    first = allocator.allocate()
    allocator.allocate()
    allocator.release(first)
    assert allocator.allocate() != first


def test_the_highest_address_released_is_not_handed_out_next() -> None:
    # A stop-first rolling update releases the newest replica's address just before its
    # replacement asks for one; the handler's cursor (the last address handed out) keeps the
    # replacement off it, where "after the highest allocated" alone gave it straight back.
    subnet = IPv4Network("10.5.0.0/24")
    allocator = AddressAllocator(subnet, default_gateway(subnet))
    allocator.allocate()
    newest = allocator.allocate()
    allocator.release(newest)
    rebuilt = AddressAllocator(
        subnet, default_gateway(subnet), allocator.allocated, cursor=allocator.cursor
    )
    assert rebuilt.allocate() == newest + 1
    assert AddressAllocator(subnet, default_gateway(subnet), allocator.allocated).allocate() == (
        newest
    ), "without a cursor the highest free address comes back (a restarted daemon)"


def test_requested_addresses_are_checked() -> None:
    subnet = IPv4Network("10.5.0.0/24")
    allocator = AddressAllocator(subnet, default_gateway(subnet))
    assert allocator.allocate(IPv4Address("10.5.0.77")) == IPv4Address("10.5.0.77")
    with pytest.raises(Conflict, match=re.escape('"10.5.0.77" is already in use')):
        allocator.allocate(IPv4Address("10.5.0.77"))
    with pytest.raises(InvalidArgument, match="not a usable host address"):
        allocator.allocate(IPv4Address("10.5.0.1"))
    with pytest.raises(InvalidArgument, match="not a usable host address"):
        allocator.allocate(IPv4Address("10.7.0.5"))


def test_a_full_subnet_is_a_conflict() -> None:
    subnet = IPv4Network("10.5.0.0/29")
    allocator = AddressAllocator(subnet, default_gateway(subnet))
    handed = {allocator.allocate() for _ in range(5)}
    assert len(handed) == 5
    with pytest.raises(Conflict, match="no free address left"):
        allocator.allocate()
