"""The network handler's options: the ``network:`` section of carte.yaml."""

from typing import Annotated

import msgspec

from carte.engine.config import HandlerOptions


class NetworkOptions(HandlerOptions, frozen=True, kw_only=True):
    """Networks: the default bridge, the subnet pools new networks come from, DNS upstreams."""

    default_bridge: str = ""
    """Bridge of the default network; empty: carte0 for /var/lib/carte, else one per root."""
    pools: tuple[str, ...] = (
        "172.17.0.0/16:16",
        "172.18.0.0/15:16",
        "172.20.0.0/14:16",
        "172.24.0.0/13:16",
        "192.168.0.0/16:20",
    )
    """BASE/LEN:SIZE ranges carved into subnets; the first one free of host routes is used."""
    dns: bool = True
    """Serve container names on each bridge's gateway address, port 53."""
    dns_upstreams: tuple[str, ...] = ()
    """IP[:PORT] resolvers for names outside Carte's; empty: the host's /etc/resolv.conf."""
    dns_upstream_timeout: float = 2.0
    """Seconds to wait for the host's resolvers before answering SERVFAIL."""
    dns_max_inflight: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 256
    """Queries (UDP) and connections (TCP) the daemon's DNS resolver handles at once; beyond,
    a forwarded query gets SERVFAIL at once and a connection is closed."""
    log_denied: bool = False
    """Log packets a network policy denies (kernel log, prefix "carte-denied")."""
