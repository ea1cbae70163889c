"""What the services tests ask a daemon: a service's replicas and desired count (through the
CLI, as JSON), readiness, the VIP of a stack's default network, an autoscaled service's keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any

from support.containers import ok
from support.daemon import Daemon

# The end of an autoscaled service `busy` in a Compose file: one replica held to 0.1 CPU, which
# the autoscaler may take to 2 when it uses more than half of that.
AUTOSCALED = """\
    deploy:
      replicas: 1
      resources:
        limits:
          cpus: "0.1"
    x-carte:
      autoscale:
        min: 1
        max: 2
        target_cpu_percent: 50
"""


def replicas(daemon: Daemon, service: str = "svc_web") -> list[dict[str, Any]]:
    """`carte service ps SERVICE` (``<stack>_<service>``) as JSON rows."""
    rows: list[dict[str, Any]] = json.loads(
        ok(daemon.client("--format", "json", "service", "ps", service))
    )
    return rows


def ready(daemon: Daemon, n: int, service: str = "svc_web") -> Callable[[], bool]:
    def check() -> bool:
        rows = replicas(daemon, service)  # exactly n, all ready: none of an earlier scale stopping
        return len(rows) == n and all(r["ready"] for r in rows)

    return check


def desired(daemon: Daemon, stack: str, service: str) -> int:
    """The replica count the stack's service asks for now (the autoscaler changes it)."""
    rows = json.loads(ok(daemon.client("--format", "json", "service", "ls", stack)))
    return int(next(r["desired"] for r in rows if r["name"] == service))


def vip(daemon: Daemon, network: str = "svc_default") -> str:
    """The service VIP on `network`: the last usable address of its subnet."""
    found = json.loads(ok(daemon.client("--format", "json", "network", "inspect", network)))
    if isinstance(found, list):
        found = found[0]
    return str(IPv4Network(found["subnet"]).broadcast_address - 1)
