"""The DNS forwarder under a flood (issue 11 item 11): with the upstream silent, queries to
forward beyond the resolver's bound are answered SERVFAIL at once instead of each holding a
task and a socket for the whole upstream timeout; Carte's own names are still answered."""

from __future__ import annotations

import logging
import os
import socket
import struct
from ipaddress import IPv4Address

import trio

from carte.handlers.network._dns import Resolver
from carte.net.dns_message import NOERROR, SERVFAIL

LOG = logging.getLogger("test-dns-hardening")


def query(name: str, ident: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"


def rcode(reply: bytes) -> int:
    flags: int = struct.unpack_from("!H", reply, 2)[0]
    return flags & 0xF


def lookup(asker: IPv4Address, name: str) -> list[IPv4Address] | None:
    return [IPv4Address("10.1.2.3")] if name == "web" else None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_saturated_forwarder_answers_servfail_at_once() -> None:
    silent = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    bound = 8
    resolver = Resolver(lookup, [silent.getsockname()], timeout=5.0, log=LOG, max_pending=bound)
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with silent, client:
        async with trio.open_nursery() as nursery:
            port = free_port()
            await nursery.start(resolver.serve, IPv4Address("127.0.0.1"), port)
            before = open_fds()
            flood = 200
            for ident in range(flood):
                await client.sendto(query("example.org", ident), ("127.0.0.1", port))
            replies: dict[int, int] = {}
            with trio.move_on_after(1.0):  # well under the 5 s upstream timeout
                while len(replies) < flood - bound:
                    data = await client.recv(4096)
                    replies[struct.unpack_from("!H", data)[0]] = rcode(data)
            assert len(replies) == flood - bound, f"{len(replies)} quick answers"
            assert set(replies.values()) == {SERVFAIL}
            assert open_fds() - before <= bound, "a socket per packet"
            await client.sendto(query("web", 999), ("127.0.0.1", port))
            with trio.fail_after(1.0):
                data = await client.recv(4096)
                while struct.unpack_from("!H", data)[0] != 999:
                    data = await client.recv(4096)
            assert rcode(data) == NOERROR
            nursery.cancel_scope.cancel()
