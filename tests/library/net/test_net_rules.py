"""Rendering the desired state as nft text: validation and what each kind of network gets."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from carte.api.errors import Conflict, InvalidArgument
from carte.net.ports import ANY_ADDRESS, Protocol
from carte.net.rules import NetworkRules, PublishedPort, Ruleset, render

SUBNET = IPv4Network("10.1.0.0/24")


def _port(host_ip: IPv4Address, host_port: int, n: int, proto: Protocol = "tcp") -> PublishedPort:
    return PublishedPort(
        host_ip=host_ip,
        host_port=host_port,
        container_ip=IPv4Address(f"10.1.0.{n}"),
        container_port=80,
        proto=proto,
    )


def _render(*published: PublishedPort, internal: bool = False) -> str:
    network = NetworkRules(bridge="br-x", subnet=SUBNET, internal=internal, published=published)
    return render(Ruleset(table="carte-t-x", networks=(network,)))


@pytest.mark.parametrize(
    ("first", "second"),
    [(ANY_ADDRESS, ANY_ADDRESS), (ANY_ADDRESS, IPv4Address("127.0.0.1"))],
)
def test_one_host_port_cannot_be_published_twice(first: IPv4Address, second: IPv4Address) -> None:
    with pytest.raises(Conflict, match="8080/tcp is already published"):
        _render(_port(first, 8080, 2), _port(second, 8080, 3))
    with pytest.raises(Conflict, match="8080/tcp is already published"):
        _render(_port(second, 8080, 2), _port(first, 8080, 3))


def test_one_port_on_two_addresses_or_protocols_is_fine() -> None:
    text = _render(
        _port(IPv4Address("127.0.0.1"), 8080, 2),
        _port(IPv4Address("127.0.0.2"), 8080, 3),
        _port(ANY_ADDRESS, 8080, 4, proto="udp"),
    )
    assert "ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.1.0.2:80" in text
    assert "ip daddr 127.0.0.2 tcp dport 8080 dnat to 10.1.0.3:80" in text
    assert "\n    udp dport 8080 dnat to 10.1.0.4:80" in text


def test_internal_networks_get_no_masquerade_and_no_published_ports() -> None:
    text = _render(_port(ANY_ADDRESS, 8080, 2), internal=True)
    assert "dnat to" not in text
    assert f"ip saddr {SUBNET} oifname" not in text
    assert 'iifname "br-x" oifname != "br-x" drop' in text


@pytest.mark.parametrize(
    ("field", "value"),
    [("table", "carte t"), ("bridge", 'br"x'), ("log_prefix", 'deny" accept')],
)
def test_names_nft_cannot_take_are_refused(field: str, value: str) -> None:
    network = {"bridge": "br-x", "subnet": SUBNET, field: value}
    network.pop("table", None)
    table = value if field == "table" else "carte-t-x"
    with pytest.raises(InvalidArgument, match="is invalid"):
        render(Ruleset(table=table, networks=(NetworkRules(**network),)))  # type: ignore[arg-type]
