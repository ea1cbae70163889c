"""What the pages show, gathered with the same bus commands the CLI's routes send.

Nothing here writes: the only action, scaling, is `ScaleService` in `_pages`. A daemon that is
not a cluster control plane has no membership or scheduler to ask (their commands answer
`Unavailable`): the dashboard then shows this machine as the one node and counts the stacks
handler's own replicas on it.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from typing import Any, TypeVar

import msgspec

from carte.api.cluster import ClusterStatus, NodeRecord, Placement
from carte.api.errors import CarteError
from carte.api.events import (
    Command,
    GetClusterStatus,
    ListNodes,
    ListPlacements,
    ListReplicas,
)
from carte.engine import Bus

T = TypeVar("T")

# (stack, service) -> node -> running replicas
ReplicaMap = dict[tuple[str, str], dict[str, int]]


class HostLoad(msgspec.Struct, frozen=True, kw_only=True):
    """This machine's load, read from /proc."""

    name: str
    cpus: int
    load1: float
    memory_total: int
    memory_available: int

    @property
    def memory_percent(self) -> float:
        used = self.memory_total - self.memory_available
        return 100.0 * used / self.memory_total if self.memory_total else 0.0


class Cluster(msgspec.Struct, frozen=True, kw_only=True):
    """The nodes the dashboard shows and where each service's replicas run."""

    status: ClusterStatus
    nodes: list[NodeRecord]
    replicas: ReplicaMap
    local: HostLoad
    clustered: bool


async def optional(bus: Bus, command: Command[T], default: T) -> T:
    """The answer, or ``default`` when this daemon has no handler for it (or it failed)."""
    try:
        return await bus.request(command)
    except CarteError:
        return default


def host_load() -> HostLoad:
    memory: dict[str, int] = {}
    with open("/proc/meminfo") as lines:
        for line in lines:
            key, _, rest = line.partition(":")
            memory[key] = int(rest.split()[0]) * 1024
    return HostLoad(
        name=socket.gethostname(),
        cpus=os.cpu_count() or 1,
        load1=os.getloadavg()[0],
        memory_total=memory.get("MemTotal", 0),
        memory_available=memory.get("MemAvailable", 0),
    )


async def gather_cluster(bus: Bus) -> Cluster:
    """Nodes and replicas per node, over the cluster when this daemon is a control plane."""
    status = await optional(bus, GetClusterStatus(), ClusterStatus())
    local = host_load()
    nodes: list[NodeRecord] = []
    if status.role == "control":
        nodes = await optional(bus, ListNodes(), [])
    placements: list[Placement] = await optional(bus, ListPlacements(), []) if nodes else []
    replicas: ReplicaMap = defaultdict(dict)
    if nodes:
        for placed in placements:
            if placed.state == "running" and placed.node:
                counts = replicas[(placed.stack, placed.service)]
                counts[placed.node] = counts.get(placed.node, 0) + 1
        return Cluster(
            status=status, nodes=nodes, replicas=dict(replicas), local=local, clustered=True
        )
    name = status.name or local.name
    for row in await optional(bus, ListReplicas(), []):
        if row.status.startswith("running") or row.status.startswith("Up"):
            counts = replicas[(row.stack, row.service)]
            counts[name] = counts.get(name, 0) + 1
    only = NodeRecord(name=name, role="control", status="ready")
    return Cluster(
        status=status, nodes=[only], replicas=dict(replicas), local=local, clustered=False
    )


def node_replicas(cluster: Cluster) -> dict[str, int]:
    """Running replicas per node, over every service."""
    totals: dict[str, int] = defaultdict(int)
    for counts in cluster.replicas.values():
        for node, count in counts.items():
            totals[node] += count
    return dict(totals)


def fact_details(fact: Any) -> str:
    """A fact's fields but its id and time, as compact JSON (cut at 300 characters)."""
    fields = msgspec.to_builtins(fact)
    if isinstance(fields, dict):
        for key in ("id", "time", "type"):
            fields.pop(key, None)
    text = msgspec.json.encode(fields).decode()
    return text if len(text) <= 300 else text[:299] + "…"
