"""One scrape: read the daemon's state through bus commands and turn it into metric families.

Every section asks the handler that owns the data (containers, container-tools, stacks,
cluster, api) and is left out when that handler is not serving (`Unavailable`) or the object
went away meanwhile (a container removed between the list and its stats): a scrape never
fails because one domain is down. ``carte_scrape_errors_total`` counts the sections left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import trio
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from carte.api.containers import ContainerStats, ContainerSummary
from carte.api.errors import CarteError, Conflict, NotFound
from carte.api.events import (
    GetApiStats,
    GetContainerStats,
    InspectContainer,
    ListContainers,
    ListNodes,
    ListPlacements,
    ListServices,
)
from carte.api.metrics import LATENCY_BUCKETS, LatencySeries
from carte.api.stacks import RolloutState
from carte.engine import Bus
from carte.engine.timing import TimedStore

HEALTH_STATES = ("none", "starting", "healthy", "unhealthy")
ROLLOUT_STATES: tuple[RolloutState, ...] = (
    "idle",
    "progressing",
    "paused",
    "rolling_back",
    "completed",
    "failed",
    "rolled_back",
)
_STATS_AT_ONCE = 8


class Counts:
    """Counters the metrics handler keeps from facts: handler restarts, autoscaler decisions."""

    def __init__(self) -> None:
        self.restarts: Counter[str] = Counter()
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        self.scrape_errors: Counter[str] = Counter()


async def collect(bus: Bus, store: object, counts: Counts) -> list[Metric]:
    """Every metric family of one scrape (see the module docstring)."""
    families: list[Metric] = []
    sections = (
        ("containers", _containers(bus)),
        ("services", _services(bus)),
        ("nodes", _nodes(bus)),
        ("api", _api(bus)),
    )
    for section, reading in sections:
        try:
            families.extend(await reading)
        except CarteError:
            counts.scrape_errors[section] += 1
    families.extend(_internals(bus, store, counts))
    return families


async def _containers(bus: Bus) -> list[Metric]:
    summaries = await bus.request(ListContainers(all=True))
    labels = ["id", "name"]
    info = GaugeMetricFamily(
        "carte_container_info",
        "A container (1), with its image and state.",
        labels=[*labels, "image", "state"],
    )
    restarts = CounterMetricFamily(
        "carte_container_restarts",
        "Times the restart policy restarted the container.",
        labels=labels,
    )
    health = GaugeMetricFamily(
        "carte_container_health_status",
        "1 for the container's current health status (none when it has no healthcheck).",
        labels=[*labels, "status"],
    )
    running = [summary for summary in summaries if summary.state in ("running", "paused")]
    stats = await _stats_of(bus, running)
    for summary in summaries:
        names = [summary.id[:12], summary.name]
        info.add_metric([*names, summary.image, summary.state], 1)
        for status in HEALTH_STATES:
            health.add_metric([*names, status], 1 if summary.health == status else 0)
        try:
            details = await bus.request(InspectContainer(ref=summary.id))
        except NotFound:
            continue
        restarts.add_metric(names, details.restart_count)
    return [info, restarts, health, *_usage(stats)]


async def _stats_of(bus: Bus, summaries: list[ContainerSummary]) -> list[ContainerStats]:
    """Stats of the running containers, a few at a time (each may sample CPU for 0.25 s)."""
    found: list[ContainerStats] = []
    limiter = trio.CapacityLimiter(_STATS_AT_ONCE)

    async def read(summary: ContainerSummary) -> None:
        async with limiter:
            try:
                found.append(await bus.request(GetContainerStats(ref=summary.id)))
            except (NotFound, Conflict):
                pass  # gone or stopped since the list

    async with trio.open_nursery() as nursery:
        for summary in summaries:
            nursery.start_soon(read, summary)
    return sorted(found, key=lambda stats: stats.name)


def _usage(stats: list[ContainerStats]) -> list[Metric]:
    labels = ["id", "name"]
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        "cpu": CounterMetricFamily(
            "carte_container_cpu_seconds", "CPU time the container used.", labels=labels
        ),
        "memory": GaugeMetricFamily(
            "carte_container_memory_bytes", "Memory the container's cgroup uses.", labels=labels
        ),
        "limit": GaugeMetricFamily(
            "carte_container_memory_limit_bytes",
            "The container's memory limit (the host's memory when it has none).",
            labels=labels,
        ),
        "pids": GaugeMetricFamily(
            "carte_container_pids", "Processes in the container.", labels=labels
        ),
        "rx": CounterMetricFamily(
            "carte_container_network_receive_bytes",
            "Bytes received on the container's interfaces (loopback excluded).",
            labels=labels,
        ),
        "tx": CounterMetricFamily(
            "carte_container_network_transmit_bytes",
            "Bytes sent on the container's interfaces (loopback excluded).",
            labels=labels,
        ),
        "read": CounterMetricFamily(
            "carte_container_block_read_bytes", "Bytes read from block devices.", labels=labels
        ),
        "write": CounterMetricFamily(
            "carte_container_block_write_bytes", "Bytes written to block devices.", labels=labels
        ),
    }
    for item in stats:
        names = [item.id[:12], item.name]
        families["cpu"].add_metric(names, item.cpu_usage_ns / 1e9)
        families["memory"].add_metric(names, item.memory_usage)
        families["limit"].add_metric(names, item.memory_limit)
        families["pids"].add_metric(names, item.pids)
        families["rx"].add_metric(names, item.network_rx_bytes)
        families["tx"].add_metric(names, item.network_tx_bytes)
        families["read"].add_metric(names, item.block_read_bytes)
        families["write"].add_metric(names, item.block_write_bytes)
    return list(families.values())


async def _services(bus: Bus) -> list[Metric]:
    services = await bus.request(ListServices())
    labels = ["stack", "service"]
    desired = GaugeMetricFamily(
        "carte_service_desired_replicas", "Replicas the service should run.", labels=labels
    )
    running = GaugeMetricFamily(
        "carte_service_running_replicas", "Replicas of the service running.", labels=labels
    )
    ready = GaugeMetricFamily(
        "carte_service_ready_replicas", "Replicas of the service ready.", labels=labels
    )
    rollout = GaugeMetricFamily(
        "carte_service_rollout_state",
        "1 for the state of the service's latest rollout.",
        labels=[*labels, "state"],
    )
    for service in services:
        names = [service.stack, service.name]
        desired.add_metric(names, service.desired)
        running.add_metric(names, service.running)
        ready.add_metric(names, service.ready)
        current = service.rollout or "idle"
        for state in ROLLOUT_STATES:
            rollout.add_metric([*names, state], 1 if current == state else 0)
    return [desired, running, ready, rollout]


async def _nodes(bus: Bus) -> list[Metric]:
    """Capacity and allocation per node; nothing on a daemon that is not a control plane."""
    try:
        nodes = await bus.request(ListNodes())
        placements = await bus.request(ListPlacements())
    except CarteError:
        return []
    labels = ["node"]
    cpus = GaugeMetricFamily("carte_node_cpus", "CPUs the node offers.", labels=labels)
    memory = GaugeMetricFamily("carte_node_memory_bytes", "Memory the node offers.", labels=labels)
    up = GaugeMetricFamily(
        "carte_node_ready", "1 when the node is ready, 0 when down.", labels=[*labels, "role"]
    )
    replicas = GaugeMetricFamily(
        "carte_node_replicas", "Replicas the scheduler assigned to the node.", labels=labels
    )
    reserved_cpus = GaugeMetricFamily(
        "carte_node_reserved_cpus",
        "CPUs reserved on the node by the replicas assigned to it (deploy.resources).",
        labels=labels,
    )
    reserved_memory = GaugeMetricFamily(
        "carte_node_reserved_memory_bytes",
        "Memory reserved on the node by the replicas assigned to it (deploy.resources).",
        labels=labels,
    )
    assigned = Counter(placement.node for placement in placements if placement.node)
    for node in nodes:
        mine = [placement for placement in placements if placement.node == node.name]
        cpus.add_metric([node.name], node.capacity.cpus)
        memory.add_metric([node.name], node.capacity.memory)
        up.add_metric([node.name, node.role], 1 if node.status == "ready" else 0)
        replicas.add_metric([node.name], assigned.get(node.name, 0))
        reserved_cpus.add_metric([node.name], sum(placement.cpus for placement in mine))
        reserved_memory.add_metric([node.name], sum(placement.memory for placement in mine))
    pending = GaugeMetricFamily(
        "carte_cluster_pending_replicas", "Replicas the scheduler could place nowhere."
    )
    pending.add_metric([], sum(1 for placement in placements if not placement.node))
    return [cpus, memory, up, replicas, reserved_cpus, reserved_memory, pending]


async def _api(bus: Bus) -> list[Metric]:
    stats = await bus.request(GetApiStats())
    return [
        _histogram(
            "carte_api_request_duration_seconds",
            "Time to answer an API request, by method, route template and status.",
            ["method", "route", "status"],
            stats.requests,
        )
    ]


def _internals(bus: Bus, store: object, counts: Counts) -> Iterable[Metric]:
    depth = GaugeMetricFamily(
        "carte_bus_subscriber_queue_depth",
        "Facts waiting in a subscriber's channel (a handler's, or stream for an event stream).",
        labels=["subscriber"],
    )
    capacity = GaugeMetricFamily(
        "carte_bus_subscriber_queue_capacity",
        "Facts a subscriber's channel holds before publishers wait.",
        labels=["subscriber"],
    )
    streams: Counter[str] = Counter()
    for name, waiting, size in bus.queue_depths():
        label = name if name != "stream" else f"stream{streams['stream'] or ''}"
        streams[name] += 1
        depth.add_metric([label], waiting)
        capacity.add_metric([label], size)
    restarts = CounterMetricFamily(
        "carte_handler_restarts", "Times a handler crashed and was restarted.", labels=["handler"]
    )
    for handler, count in sorted(counts.restarts.items()):
        restarts.add_metric([handler], count)
    decisions = CounterMetricFamily(
        "carte_autoscaler_decisions",
        "Autoscaler evaluations by direction (up, down or none).",
        labels=["stack", "service", "direction"],
    )
    for (stack, service, direction), count in sorted(counts.decisions.items()):
        decisions.add_metric([stack, service, direction], count)
    errors = CounterMetricFamily(
        "carte_scrape_errors",
        "Scrapes that left a section out because its handler was not serving.",
        labels=["section"],
    )
    for section, count in sorted(counts.scrape_errors.items()):
        errors.add_metric([section], count)
    families: list[Metric] = [depth, capacity, restarts, decisions, errors]
    if isinstance(store, TimedStore):
        families.append(
            _histogram(
                "carte_store_operation_duration_seconds",
                "Time of a state-store operation, by operation.",
                ["operation"],
                store.latencies.series(),
            )
        )
    return families


def _histogram(
    name: str, documentation: str, labels: list[str], series: list[LatencySeries]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for item in sorted(series, key=lambda item: sorted(item.labels.items())):
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), item.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        values = [item.labels.get(label, "") for label in labels]
        family.add_metric(values, buckets, sum_value=item.sum)
    return family
