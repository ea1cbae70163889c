"""The resolver containers use: UDP and TCP on a bridge's gateway address, port 53.

Names in Carte's domain (single-label names and ``*.carte``) are answered from the network
handler's `lookup`, which only sees the asker's networks: an unknown one gets NXDOMAIN at
once. Everything else is forwarded to the host's resolvers; when none answers within the
timeout the asker gets SERVFAIL rather than waiting. Malformed packets are dropped.

At most `max_pending` queries (UDP) and TCP connections are handled at once per resolver:
each holds a task, and a forwarded one a socket, for up to the upstream timeout. Beyond
that a UDP query for a Carte name is still answered inline, any other gets SERVFAIL at once
(no task, no socket), and a new TCP connection is closed, so a flood costs nothing that grows.
Cancelling `serve` closes its sockets; a failing client connection only ends that connection.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import trio

from carte.net.dns_message import (
    NOERROR,
    NXDOMAIN,
    TYPE_A,
    MalformedMessage,
    Query,
    answer,
    parse_query,
    server_failure,
)

Lookup = Callable[[IPv4Address, str], "list[IPv4Address] | None"]
"""(asker, name) -> addresses; [] for an unknown Carte name, None for a name to forward."""
Upstream = tuple[str, int]
DNS_PORT = 53
_MAX_UDP = 4096
_TCP_IDLE_SECONDS = 10.0
MAX_PENDING = 256
"""Default bound on queries and TCP connections in progress at once, per resolver."""


def host_upstreams(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[Upstream]:
    """The IPv4 ``nameserver`` lines of the host's resolv.conf (none if it is unreadable)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append((str(IPv4Address(fields[1])), DNS_PORT))
            except ValueError:
                continue  # IPv6 resolvers are not reachable through Carte's IPv4 bridges
    return found


def parse_upstream(text: str) -> Upstream:
    """``IP`` or ``IP:PORT``; raises ValueError for anything else."""
    host, _, port = text.partition(":")
    return str(IPv4Address(host)), int(port or DNS_PORT)


class Resolver:
    """Answers queries for one daemon; `serve` runs it on one address."""

    def __init__(
        self,
        lookup: Lookup,
        upstreams: Sequence[Upstream],
        timeout: float,
        log: logging.Logger,
        *,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.lookup = lookup
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self.log = log
        self.max_pending = max_pending
        self._pending = 0
        self._refused = 0

    async def serve(
        self, address: IPv4Address, port: int = DNS_PORT, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Serve UDP and TCP on `address`:`port` until cancelled; started once both are bound.

        Raises OSError when the address cannot be bound (before `started`)."""
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with udp, tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await udp.bind((str(address), port))
            await tcp.bind((str(address), port))
            tcp.listen(64)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_udp, udp, nursery)
                nursery.start_soon(self._serve_tcp, tcp, nursery)
                task_status.started()

    @property
    def saturated(self) -> bool:
        return self._pending >= self.max_pending

    async def _serve_udp(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            data, peer = await sock.recvfrom(_MAX_UDP)
            if self.saturated:
                await self._send(sock, self.respond_saturated(data, IPv4Address(peer[0])), peer)
                continue
            self._pending += 1
            nursery.start_soon(self._reply_udp, sock, data, peer)

    async def _reply_udp(
        self, sock: trio.socket.SocketType, data: bytes, peer: tuple[str, int]
    ) -> None:
        try:
            await self._send(sock, await self.respond(data, IPv4Address(peer[0])), peer)
        finally:
            self._pending -= 1

    async def _send(
        self, sock: trio.socket.SocketType, reply: bytes | None, peer: tuple[str, int]
    ) -> None:
        if reply is not None:
            try:
                await sock.sendto(reply, peer)
            except OSError as exc:
                self.log.debug("dns reply to %s failed: %s", peer[0], exc)

    def respond_saturated(self, data: bytes, asker: IPv4Address) -> bytes | None:
        """The reply while saturated: Carte names as usual, SERVFAIL for names to forward."""
        try:
            query = parse_query(data)
        except MalformedMessage:
            return None
        addresses = self.lookup(asker, query.name)
        if addresses is not None:
            return self._local_answer(query, addresses)
        self._refused += 1
        if self._refused == 1 or self._refused % 1000 == 0:
            self.log.warning(
                "dns: %d queries in progress; answered SERVFAIL without forwarding (%d so far)",
                self._pending,
                self._refused,
            )
        return server_failure(data)

    async def _serve_tcp(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            conn, peer = await sock.accept()
            if self.saturated:
                conn.close()
                continue
            self._pending += 1
            nursery.start_soon(self._tcp_connection, conn, IPv4Address(peer[0]))

    async def _tcp_connection(self, conn: trio.socket.SocketType, asker: IPv4Address) -> None:
        try:
            await self._tcp_queries(conn, asker)
        finally:
            self._pending -= 1

    async def _tcp_queries(self, conn: trio.socket.SocketType, asker: IPv4Address) -> None:
        stream = trio.SocketStream(conn)
        buffer = b""
        async with stream:
            with trio.move_on_after(_TCP_IDLE_SECONDS):
                try:
                    while True:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buffer += chunk
                        while len(buffer) >= 2:
                            (size,) = struct.unpack_from("!H", buffer)
                            if len(buffer) < 2 + size:
                                break
                            message, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                            reply = await self.respond(message, asker)
                            if reply is None:
                                return
                            await stream.send_all(struct.pack("!H", len(reply)) + reply)
                except (trio.BrokenResourceError, OSError):
                    return

    async def respond(self, data: bytes, asker: IPv4Address) -> bytes | None:
        """The reply to one query (None: drop it)."""
        try:
            query = parse_query(data)
        except MalformedMessage:
            return None
        addresses = self.lookup(asker, query.name)
        if addresses is None:
            return await self.forward(data)
        return self._local_answer(query, addresses)

    def _local_answer(self, query: Query, addresses: list[IPv4Address]) -> bytes:
        if not addresses:
            return answer(query, NXDOMAIN)
        if query.qtype != TYPE_A:
            return answer(query, NOERROR)  # the name exists; Carte has only IPv4 for it
        return answer(query, NOERROR, addresses)

    async def forward(self, data: bytes) -> bytes | None:
        """Ask each upstream in turn (over UDP) within the timeout; SERVFAIL when none answers."""
        with trio.move_on_after(self.timeout):
            for upstream in self.upstreams:
                reply = await _ask(upstream, data)
                if reply is not None:
                    return reply
        return server_failure(data)


async def _ask(upstream: Upstream, data: bytes) -> bytes | None:
    """One upstream's reply with the query's id, or None when it refuses (port unreachable)."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            await sock.connect(upstream)
            await sock.send(data)
            while True:
                reply = await sock.recv(_MAX_UDP)
                if reply[:2] == data[:2]:
                    return reply
        except OSError:
            return None
