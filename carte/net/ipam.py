"""IPv4 address management: pick a subnet for a new network, hand out addresses inside it.

Pure logic, no I/O. The caller (the daemon's network handler) keeps the allocated addresses in
its store and passes them back in, so an allocator rebuilt after a restart never repeats an
address that is still in use. Bad input raises `InvalidArgument` or `Conflict` with one line
naming the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from carte.api.errors import Conflict, InvalidArgument


@dataclass(frozen=True)
class AddressPool:
    """A range of address space carved into equally sized subnets (like Docker's pools)."""

    base: IPv4Network
    prefixlen: int

    def subnets(self) -> Iterable[IPv4Network]:
        if self.prefixlen < self.base.prefixlen:
            return iter((self.base,))
        return self.base.subnets(new_prefix=self.prefixlen)


DEFAULT_POOLS: tuple[AddressPool, ...] = (
    AddressPool(IPv4Network("172.17.0.0/16"), 16),
    AddressPool(IPv4Network("172.18.0.0/15"), 16),
    AddressPool(IPv4Network("172.20.0.0/14"), 16),
    AddressPool(IPv4Network("172.24.0.0/13"), 16),
    AddressPool(IPv4Network("192.168.0.0/16"), 20),
)
"""172.17.0.0/16 first (the default bridge), then 172.18-31.0.0/16, then 192.168.x.0/20."""


def parse_pool(text: str) -> AddressPool:
    """Parse ``BASE/LEN:SIZE`` (e.g. ``10.10.0.0/16:24``) or ``BASE/LEN`` (one subnet)."""
    base_text, _, size_text = text.partition(":")
    base = parse_subnet(base_text)
    if not size_text:
        return AddressPool(base, base.prefixlen)
    if not size_text.isdigit() or not base.prefixlen <= int(size_text) <= 30:
        raise InvalidArgument(
            f'address pool "{text}" has an invalid subnet size; write BASE/LEN:SIZE with '
            f"{base.prefixlen} <= SIZE <= 30, e.g. 10.10.0.0/16:24"
        )
    return AddressPool(base, int(size_text))


def parse_subnet(text: str) -> IPv4Network:
    """Parse an IPv4 CIDR such as ``10.5.0.0/24``; host bits must be zero."""
    try:
        subnet = IPv4Network(text, strict=False)
    except ValueError:
        raise InvalidArgument(
            f'subnet "{text}" is not an IPv4 CIDR; write it like 10.5.0.0/24'
        ) from None
    if "/" not in text:
        raise InvalidArgument(f'subnet "{text}" has no prefix length; write it like {subnet}/24')
    if subnet.with_prefixlen != text.strip():
        raise InvalidArgument(
            f'subnet "{text}" has host bits set; did you mean {subnet.with_prefixlen}?'
        )
    if subnet.prefixlen > 30:
        raise InvalidArgument(
            f'subnet "{text}" is too small for a gateway and containers; use /30 or larger'
        )
    return subnet


def parse_address(text: str, subnet: IPv4Network, *, what: str = "address") -> IPv4Address:
    """Parse an IPv4 address that must be a usable host address of `subnet`."""
    try:
        address = IPv4Address(text)
    except ValueError:
        raise InvalidArgument(f'{what} "{text}" is not an IPv4 address') from None
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(
            f'{what} "{text}" is outside subnet {subnet}; pick a host address inside it'
        )
    return address


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    """The first host address of the subnet, like Docker."""
    return subnet.network_address + 1


def check_subnet_free(subnet: IPv4Network, networks: Mapping[str, IPv4Network]) -> None:
    """Raise `Conflict` if `subnet` overlaps any of the named existing networks."""
    for name, other in networks.items():
        if subnet.overlaps(other):
            raise Conflict(f"subnet {subnet} overlaps {other} of {name}; choose another --subnet")


def choose_subnet(
    in_use: Iterable[IPv4Network], pools: Iterable[AddressPool] = DEFAULT_POOLS
) -> IPv4Network:
    """The first pool subnet that overlaps nothing in `in_use` (host routes, Carte networks).

    A default route (0.0.0.0/0) in `in_use` is ignored: it overlaps everything.
    Raises `Conflict` when every pool subnet is taken.
    """
    taken = [net for net in in_use if net.prefixlen > 0]
    for pool in pools:
        for candidate in pool.subnets():
            if not any(candidate.overlaps(net) for net in taken):
                return candidate
    raise Conflict(
        "every subnet of the address pools is in use or overlaps a host route; "
        "remove unused networks (carte network prune) or give --subnet"
    )


class AddressAllocator:
    """Hands out host addresses of one subnet, never one that is allocated or reserved.

    `allocated` is the caller's persisted set; the allocator adds to and removes from it, so
    the caller persists exactly that set. After a restart, build a new allocator from it.
    Addresses are handed out in order after `cursor` (the caller's last handed-out address;
    without one, the highest allocated), wrapping around, so a just-released address is not
    reused at once: a replica that replaces another does not inherit its address while the
    old one's connections and neighbour entries are still being forgotten.
    """

    def __init__(
        self,
        subnet: IPv4Network,
        gateway: IPv4Address,
        allocated: Iterable[IPv4Address] = (),
        *,
        cursor: IPv4Address | None = None,
    ) -> None:
        if gateway not in subnet:
            raise InvalidArgument(
                f'gateway "{gateway}" is outside subnet {subnet}; pick a host address inside it'
            )
        self.subnet = subnet
        self.gateway = gateway
        self.allocated: set[IPv4Address] = set(allocated)
        self.cursor = cursor if cursor is not None and cursor in subnet else None

    def _reserved(self, address: IPv4Address) -> bool:
        return address in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
            self.gateway,
        )

    def allocate(self, requested: IPv4Address | None = None) -> IPv4Address:
        """Allocate `requested` (from ``--ip``) or the next free address.

        Raises `InvalidArgument` for an address outside the subnet or reserved, `Conflict` when
        it is taken or when the subnet is full.
        """
        if requested is not None:
            return self._allocate_requested(requested)
        first = int(self.subnet.network_address) + 1
        last = int(self.subnet.broadcast_address) - 1
        if self.cursor is not None:
            start = int(self.cursor) + 1
        else:
            start = max((int(a) for a in self.allocated), default=first - 1) + 1
        size = last - first + 1
        for step in range(size):
            candidate = IPv4Address(first + (start - first + step) % size)
            if not self._reserved(candidate) and candidate not in self.allocated:
                self.allocated.add(candidate)
                self.cursor = candidate
                return candidate
        raise Conflict(
            f"subnet {self.subnet} has no free address left; "
            "remove containers from it or create a network with a larger --subnet"
        )

    def _allocate_requested(self, requested: IPv4Address) -> IPv4Address:
        if requested not in self.subnet or self._reserved(requested):
            raise InvalidArgument(
                f'address "{requested}" is not a usable host address of subnet {self.subnet}; '
                "pick another --ip"
            )
        if requested in self.allocated:
            raise Conflict(f'address "{requested}" is already in use; pick another --ip')
        self.allocated.add(requested)
        return requested

    def release(self, address: IPv4Address) -> None:
        """Return an address to the free set; releasing a free address does nothing."""
        self.allocated.discard(address)
