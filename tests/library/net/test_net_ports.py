"""Port specs and host port availability, checked with real sockets."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address

import pytest

from carte.api.errors import Conflict, InvalidArgument
from carte.net.ports import (
    ANY_ADDRESS,
    PortRequest,
    Protocol,
    check_port_free,
    parse_publish,
    pick_free_port,
)

LOOPBACK = IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", PortRequest(host_ip=ANY_ADDRESS, host_port=None, container_port=80, proto="tcp")),
        (
            "8080:80",
            PortRequest(host_ip=ANY_ADDRESS, host_port=8080, container_port=80, proto="tcp"),
        ),
        (
            "53:53/udp",
            PortRequest(host_ip=ANY_ADDRESS, host_port=53, container_port=53, proto="udp"),
        ),
        (
            "127.0.0.1:8080:80",
            PortRequest(host_ip=LOOPBACK, host_port=8080, container_port=80, proto="tcp"),
        ),
        (
            "127.0.0.1::80/tcp",
            PortRequest(host_ip=LOOPBACK, host_port=None, container_port=80, proto="tcp"),
        ),
    ],
)
def test_publish_specs_parse(spec: str, expected: PortRequest) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("80/sctp", '"sctp"'),
        ("8080:", '"8080:"'),
        ("70000:80", '"70000"'),
        ("x:80", '"x"'),
        ("1.2.3:8080:80", '"1.2.3"'),
        ("1:2:3:4", '"1:2:3:4"'),
    ],
)
def test_malformed_publish_specs_name_the_value(spec: str, named: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_publish(spec)
    assert named in caught.value.message


def test_a_listening_tcp_port_is_reported_taken() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(Conflict, match=f"host port 127.0.0.1:{port}/tcp is not available"):
            check_port_free(LOOPBACK, port, "tcp")
        with pytest.raises(Conflict, match=f"0.0.0.0:{port}/tcp"):
            check_port_free(ANY_ADDRESS, port, "tcp")
    check_port_free(LOOPBACK, port, "tcp")


def test_a_bound_udp_port_is_reported_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        with pytest.raises(Conflict, match=f"{port}/udp"):
            check_port_free(ANY_ADDRESS, port, "udp")


def test_a_picked_port_is_free() -> None:
    proto: Protocol
    for proto in ("tcp", "udp"):
        port = pick_free_port(ANY_ADDRESS, proto)
        assert 1024 < port <= 65535
        check_port_free(ANY_ADDRESS, port, proto)


def test_a_picked_port_avoids_ports_carte_already_publishes() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        low, high = (int(n) for n in ports.read().split())
    middle = (low + high) // 2
    avoid = set(range(low, middle))  # bind(0) offers only these (the lower half)
    picked = {pick_free_port(ANY_ADDRESS, "tcp", avoid=avoid) for _ in range(20)}
    assert all(middle <= port <= high for port in picked)
