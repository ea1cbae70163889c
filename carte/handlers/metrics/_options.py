"""The metrics handler's options: ``handlers.options.metrics`` in carte.yaml (flags
``--metrics-listen`` and ``--metrics-insecure``)."""

import ipaddress

from carte.engine.config import HandlerOptions

_LOOPBACK_NAMES = ("localhost", "ip6-localhost")


class MetricsOptions(HandlerOptions, frozen=True, kw_only=True):
    """``/metrics`` is always served on the API socket (and on the TCP listener, to admin
    certificates); ``listen`` adds a plain-HTTP address for a Prometheus server."""

    listen: str = ""
    """``ADDR:PORT`` (``[::1]:PORT`` for IPv6) serving only ``GET /metrics`` over plain HTTP,
    without authentication; empty: none. Only loopback addresses unless ``insecure``."""
    insecure: bool = False
    """Allow a ``listen`` address that is not loopback (anyone who reaches it reads every
    container's name and usage): put a firewall or a TLS proxy in front of it."""

    def __post_init__(self) -> None:
        if not self.listen:
            return
        host, _ = split_address(self.listen)
        if not self.insecure and not _is_loopback(host):
            raise ValueError(
                f"listen {self.listen} is not a loopback address and /metrics is plain HTTP "
                "without authentication; use 127.0.0.1:PORT, or add insecure: true "
                "(--metrics-insecure) to serve it to the network anyway"
            )


def split_address(address: str) -> tuple[str, int]:
    """``ADDR:PORT`` -> (ADDR, PORT); raises ValueError naming the expected form."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen {address!r} is not ADDR:PORT (e.g. 127.0.0.1:9323)")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
