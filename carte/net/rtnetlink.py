"""Plain rtnetlink requests, packed and read by hand: the few fixed requests of a container's
start path (a veth pair, its address, link state and default route; look-ups and deletes).

pyroute2 runs an event loop per request (about 0.5 ms each); a batch here costs about
0.03 ms a request. Everything else about links goes through pyroute2 (carte/net/links.py).
Constants are those of <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h> and
<linux/veth.h>. A request the kernel refuses raises `Failure` (its position and errno).
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 18, 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 10, 18
IFLA_NET_NS_FD, IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 28, 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, RTA_OIF, RTA_GATEWAY = 1, 2, 4, 5
IFF_UP = 0x1
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
# rtmsg of a default route: family, dst_len, src_len, tos, table, protocol, scope, type, flags
DEFAULT_ROUTE = struct.pack("=8BI", socket.AF_INET, 0, 0, 0, 254, 4, 0, 1, 0)


def route_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)


def attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute (rtattr), padded to 4 bytes."""
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def string(kind: int, text: str) -> bytes:
    """A NUL-terminated string attribute (an interface name, a link kind)."""
    return attr(kind, text.encode() + b"\0")


def get_link(ifname: str) -> tuple[int, int, bytes]:
    return (RTM_GETLINK, NLM_F_REQUEST, ifinfo() + string(IFLA_IFNAME, ifname))


def index_in(answer: bytes) -> int:
    """The interface index of an RTM_NEWLINK answer (its ifinfomsg)."""
    return int(IFINFOMSG.unpack_from(answer)[2])


def ifinfo(index: int = 0, up: bool = False) -> bytes:
    """struct ifinfomsg; `up` sets IFF_UP."""
    flag = IFF_UP if up else 0
    return IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flag, flag)


class Failure(Exception):
    """A request the kernel refused: its position in the batch and the errno."""

    def __init__(self, position: int, code: int) -> None:
        super().__init__(position, code)
        self.position = position
        self.code = code
        self.reason = os.strerror(code)


class Rtnl:
    """Plain rtnetlink requests over one socket, sent in one batch and answered in order.

    pyroute2 runs an event loop per request (~0.5 ms each); these few fixed requests of the
    start path need no parser, so they are packed and read here (~0.03 ms each).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._sequence = 0

    def close(self) -> None:
        self._socket.close()

    def call(self, *requests: tuple[int, int, bytes]) -> list[bytes]:
        """Send (type, flags, body) requests at once; per request its answer's payload
        (empty for an acknowledgement). Raises `Failure` for the first one refused, after
        every answer was read (the kernel goes on with the requests after a refused one)."""
        first = self._sequence + 1
        batch = []
        for kind, flags, body in requests:
            self._sequence += 1
            header = HEADER.pack(HEADER.size + len(body), kind, flags, self._sequence, 0)
            batch.append(header + body)
        self._socket.sendall(b"".join(batch))
        answers: dict[int, bytes] = {}
        failures: dict[int, int] = {}
        while len(answers) + len(failures) < len(requests):
            data = self._socket.recv(1 << 16)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind, _, sequence, _ = HEADER.unpack_from(data, offset)
                payload = data[offset + HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if not first <= sequence <= self._sequence:
                    continue  # an answer to an earlier, abandoned batch
                position = sequence - first
                if kind == NLMSG_ERROR and struct.unpack_from("=i", payload)[0] < 0:
                    failures[position] = -struct.unpack_from("=i", payload)[0]
                else:
                    answers[position] = b"" if kind == NLMSG_ERROR else payload
        if failures:
            position = min(failures)
            raise Failure(position, failures[position])
        return [answers[i] for i in range(len(requests))]

    def index_of(self, ifname: str) -> int | None:
        try:
            (answer,) = self.call(get_link(ifname))
        except Failure as failure:
            if failure.code == errno.ENODEV:
                return None
            raise
        return index_in(answer)
