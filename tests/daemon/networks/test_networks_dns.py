"""The DNS codec and the resolver task on loopback sockets (real UDP and TCP)."""

from __future__ import annotations

import logging
import socket
import struct
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from carte.handlers.network._dns import Resolver, host_upstreams, parse_upstream
from carte.net.dns_message import (
    NXDOMAIN,
    SERVFAIL,
    MalformedMessage,
    answer,
    parse_query,
)

LOG = logging.getLogger("test-dns")
ASKER = IPv4Address("127.0.0.1")


def query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def rcode(reply: bytes) -> int:
    flags: int = struct.unpack_from("!H", reply, 2)[0]
    return flags & 0xF


def addresses(reply: bytes) -> list[IPv4Address]:
    """The A records of a reply to one question (each answer record is 16 bytes)."""
    count = struct.unpack_from("!H", reply, 6)[0]
    first = len(reply) - 16 * count
    return [IPv4Address(reply[first + 16 * i + 12 : first + 16 * i + 16]) for i in range(count)]


def lookup(asker: IPv4Address, name: str) -> list[IPv4Address] | None:
    if "." in name and not name.endswith(".carte"):
        return None
    return [IPv4Address("10.1.2.3")] if name.removesuffix(".carte") == "web" else []


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_codec_round_trip_and_malformed_input() -> None:
    parsed = parse_query(query("Web.Carte"))
    assert (parsed.name, parsed.qtype, parsed.id) == ("web.carte", 1, 0x1234)
    reply = answer(parsed, 0, [IPv4Address("10.0.0.7"), IPv4Address("10.0.0.8")])
    assert reply[:2] == b"\x12\x34" and rcode(reply) == 0
    assert addresses(reply) == [IPv4Address("10.0.0.7"), IPv4Address("10.0.0.8")]
    for bad in (b"", b"\x00" * 11, query("x")[:14], answer(parsed, 0)):
        with pytest.raises(MalformedMessage):
            parse_query(bad)


def test_host_upstreams_reads_ipv4_nameservers(tmp_path: object) -> None:
    from pathlib import Path

    conf = Path(str(tmp_path)) / "resolv.conf"
    conf.write_text("search x\nnameserver 10.9.9.9\nnameserver ::1\nnameserver 10.8.8.8\n")
    assert host_upstreams(conf) == [("10.9.9.9", 53), ("10.8.8.8", 53)]
    assert parse_upstream("127.0.0.1:5353") == ("127.0.0.1", 5353)


async def test_carte_names_answered_unknown_ones_nxdomain_over_udp_and_tcp() -> None:
    resolver = Resolver(lookup, [], timeout=1.0, log=LOG)
    port = free_port(socket.SOCK_DGRAM)
    async with trio.open_nursery() as nursery:
        await nursery.start(resolver.serve, ASKER, port)
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            await udp.connect(("127.0.0.1", port))
            await udp.send(query("web"))
            reply = await udp.recv(512)
            assert addresses(reply) == [IPv4Address("10.1.2.3")]
            await udp.send(query("nosuch"))
            assert rcode(await udp.recv(512)) == NXDOMAIN
            await udp.send(query("web", qtype=28))  # AAAA of a known name: no data, no error
            reply = await udp.recv(512)
            assert rcode(reply) == 0 and addresses(reply) == []
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            message = query("web.carte")
            await stream.send_all(struct.pack("!H", len(message)) + message)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
                data += await stream.receive_some(512)
            assert addresses(data[2:]) == [IPv4Address("10.1.2.3")]
        nursery.cancel_scope.cancel()


async def test_other_names_are_forwarded_to_the_upstream() -> None:
    """The upstream is a stand-in served by the test: no real resolver is reachable here."""
    upstream = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await upstream.bind(("127.0.0.1", 0))
    resolver = Resolver(lookup, [upstream.getsockname()], timeout=1.0, log=LOG)

    async def answer_once() -> None:
        data, peer = await upstream.recvfrom(512)
        await upstream.sendto(answer(parse_query(data), 0, [IPv4Address("192.0.2.9")]), peer)

    with upstream:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_once)
            reply = await resolver.respond(query("example.org"), ASKER)
    assert reply is not None and addresses(reply) == [IPv4Address("192.0.2.9")]


async def test_servfail_at_once_when_the_upstream_refuses() -> None:
    port = free_port(socket.SOCK_DGRAM)
    resolver = Resolver(lookup, [("127.0.0.1", port)], timeout=5.0, log=LOG)
    with trio.fail_after(1):
        reply = await resolver.respond(query("example.org"), ASKER)
    assert reply is not None and rcode(reply) == SERVFAIL


async def test_servfail_after_the_timeout_when_the_upstream_is_silent(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    silent = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    resolver = Resolver(lookup, [silent.getsockname()], timeout=2.0, log=LOG)
    with silent:
        start = trio.current_time()
        reply = await resolver.respond(query("example.org"), ASKER)
    assert reply is not None and rcode(reply) == SERVFAIL
    assert trio.current_time() - start == pytest.approx(2.0)
