"""What the services handler keeps in the store: each service's VIP, under ``services/<key>``.

The key is ``<stack>_<service>``, the id the stacks handler's facts carry.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import msgspec

from carte.net.lb import ServicePort

PREFIX = "services/"


def service_key(key: str) -> str:
    return PREFIX + key


class ServiceVip(msgspec.Struct, kw_only=True, frozen=True):
    """A service's virtual IP on `network` (whose bridge is `bridge`) and the ports it serves."""

    stack: str
    service: str
    network: str
    bridge: str
    vip: str
    ports: list[ServicePort] = []
    ready: dict[str, str] = {}
    """The ready replicas last balanced to (container id -> address): a restarted daemon keeps
    serving them until their readiness is probed again."""

    @property
    def key(self) -> str:
        return f"{self.stack}_{self.service}"

    @property
    def vip_address(self) -> IPv4Address:
        return IPv4Address(self.vip)
