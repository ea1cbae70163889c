"""Published-port specs and host port availability.

`parse_publish` reads ``-p [IP:][HOST:]CONTAINER[/tcp|/udp]``; `check_port_free` proves a host
port is free by binding it (and releasing it at once) before anything is created;
`pick_free_port` asks the kernel for an unused one (for ``-p CONTAINER`` and ``-P``).
Bad specs raise `InvalidArgument`, taken ports `Conflict`, each naming the value.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from carte.api.errors import Conflict, InvalidArgument

Protocol = Literal["tcp", "udp"]
ANY_ADDRESS = IPv4Address("0.0.0.0")
_PICK_ATTEMPTS = 256


@dataclass(frozen=True)
class PortRequest:
    """A parsed ``-p`` value; `host_port` None means "pick a free one"."""

    host_ip: IPv4Address
    host_port: int | None
    container_port: int
    proto: Protocol


def _port_number(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidArgument(
            f'port "{text}" in "{spec}" is not a port number 1-65535; '
            "write -p [IP:]HOST:CONTAINER[/tcp|/udp]"
        )
    return int(text)


def parse_publish(spec: str) -> PortRequest:
    """Parse ``[IP:][HOST:]CONTAINER[/tcp|/udp]``; ``IP::CONTAINER`` leaves the host port free."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgument(f'protocol "{proto}" in "{spec}" is not tcp or udp')
    parts = body.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise InvalidArgument(
            f'port spec "{spec}" is malformed; write -p [IP:]HOST:CONTAINER[/tcp|/udp]'
        )
    host_ip = ANY_ADDRESS
    if len(parts) == 3:
        try:
            host_ip = IPv4Address(parts[0])
        except ValueError:
            raise InvalidArgument(
                f'host address "{parts[0]}" in "{spec}" is not an IPv4 address'
            ) from None
    host_text = parts[-2] if len(parts) >= 2 else ""
    return PortRequest(
        host_ip=host_ip,
        host_port=_port_number(host_text, spec) if host_text else None,
        container_port=_port_number(parts[-1], spec),
        proto="udp" if proto == "udp" else "tcp",
    )


def _bound_socket(host_ip: IPv4Address, port: int, proto: Protocol) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if proto == "tcp":
            # Ignore TIME_WAIT leftovers; a listening socket still makes bind() fail.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(host_ip), port))
    except BaseException:
        sock.close()
        raise
    return sock


def check_port_free(host_ip: IPv4Address, port: int, proto: Protocol) -> None:
    """Raise `Conflict` naming the port when something on the host already holds it."""
    try:
        _bound_socket(host_ip, port, proto).close()
    except OSError as exc:
        raise Conflict(
            f"host port {host_ip}:{port}/{proto} is not available ({exc.strerror}); "
            "choose another host port or stop what uses it"
        ) from None


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low, high = (int(n) for n in ports.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def pick_free_port(
    host_ip: IPv4Address, proto: Protocol, avoid: Collection[int] = frozenset()
) -> int:
    """A port free right now on `host_ip`, from the kernel's ephemeral range.

    `avoid` holds ports already published by Carte: DNAT'd ports are not bound, so the kernel
    would happily offer them again. Raises `Conflict` when no free port is found.
    """
    try:
        with _bound_socket(host_ip, 0, proto) as sock:
            port = int(sock.getsockname()[1])
    except OSError as exc:
        raise Conflict(
            f"no free {proto} port on {host_ip} ({exc.strerror}); give a host port explicitly"
        ) from None
    if port not in avoid:
        return port
    # bind(0) searches only part of the range, so look for others ourselves.
    low, high = _ephemeral_range()
    for _ in range(_PICK_ATTEMPTS):
        port = random.randint(low, high)
        if port in avoid:
            continue
        try:
            _bound_socket(host_ip, port, proto).close()
        except OSError:
            continue
        return port
    raise Conflict(f"no free {proto} port on {host_ip}; give a host port explicitly")
