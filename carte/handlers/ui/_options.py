"""The ui handler's options: ``handlers.options.ui`` in carte.yaml, or ``carte daemon --ui
[--ui-listen ADDR:PORT]``."""

from __future__ import annotations

import ipaddress

from carte.engine.config import HandlerOptions

DEFAULT_LISTEN = "127.0.0.1:7780"


class UiOptions(HandlerOptions, frozen=True, kw_only=True):
    enabled: bool = False
    """Serve the dashboard; off by default."""
    listen: str = DEFAULT_LISTEN
    """The loopback address (HOST:PORT) of the token-login listener. Other machines reach the
    dashboard only through the cluster's mutual-TLS listener (``--listen``)."""

    def __post_init__(self) -> None:
        host, _, port = self.listen.rpartition(":")
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
        if not loopback or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f'listen "{self.listen}" is not a loopback HOST:PORT such as {DEFAULT_LISTEN}; '
                "other machines reach the dashboard through --listen (mutual TLS)"
            )

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
