"""Docker's top, stats, events, system df and prune routes, each on Carte's own commands and
facts.

Stats: Carte measures the CPU percentage itself (`GetContainerStats`); Docker's clients
compute it from two readings, so the reply carries a `precpu_stats` one virtual second
before, which gives the same percentage through Docker's formula. Events are Carte's facts
(the journal since ``since``, then live ones until ``until`` or the client leaving) in
Docker's event shape. System df: Carte's `GetDiskUsage` gives the layers' total; Docker's
clients add the rest up from per-object sizes, so each container's writable layer and each
volume is measured (allocated blocks, as du) where it lies.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from carte.api.containers import ContainerStats
from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import (
    Fact,
    GetContainerStats,
    GetDiskUsage,
    ListContainers,
    ListContainerUsage,
    ListImages,
    ListVolumes,
    PruneBuildCache,
    PruneContainers,
    PruneImages,
    PruneNetworks,
    PruneVolumes,
    TopContainer,
)
from carte.engine import HandlerContext
from carte.handlers.docker._containers import bytes_used, container_rows
from carte.handlers.docker._shapes import JSON, filters, flag, image_rows, reply, volume_shape

STATS_INTERVAL = 1.0
_SECOND = 1_000_000_000
_encoder = msgspec.json.Encoder()
# Carte's fact topic -> Docker's (Type, Action)
_ACTIONS = {
    "container.created": ("container", "create"),
    "container.started": ("container", "start"),
    "container.exited": ("container", "die"),
    "container.killed": ("container", "kill"),
    "container.paused": ("container", "pause"),
    "container.unpaused": ("container", "unpause"),
    "container.renamed": ("container", "rename"),
    "container.updated": ("container", "update"),
    "container.removed": ("container", "destroy"),
    "container.restart": ("container", "restart"),
    "container.health": ("container", "health_status"),
    "image.imported": ("image", "import"),
    "image.tagged": ("image", "tag"),
    "image.untagged": ("image", "untag"),
    "image.removed": ("image", "delete"),
    "image.pulled": ("image", "pull"),
    "image.pushed": ("image", "push"),
    "image.loaded": ("image", "load"),
    "image.committed": ("container", "commit"),
    "network.created": ("network", "create"),
    "network.removed": ("network", "destroy"),
    "volume.created": ("volume", "create"),
    "volume.removed": ("volume", "destroy"),
}
_EVENT_FILTERS = {"type", "event", "container", "image", "network", "volume"}


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stats_shape(stats: ContainerStats) -> dict[str, Any]:
    cpus = os.cpu_count() or 1
    system = time.monotonic_ns() * cpus
    delta = int(stats.cpu_percent * 1e7)  # Docker: delta / (1 s * cpus) * cpus * 100 = percent
    now = time.time()

    def cpu(total: int, system_usage: int) -> dict[str, Any]:
        return {
            "cpu_usage": {"total_usage": max(total, 0), "usage_in_kernelmode": 0,
                          "usage_in_usermode": 0},
            "system_cpu_usage": system_usage,
            "online_cpus": cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }  # fmt: skip

    return {
        "id": stats.id,
        "name": "/" + stats.name,
        "read": _rfc3339(now),
        "preread": _rfc3339(now - 1),
        "pids_stats": {"current": stats.pids},
        "cpu_stats": cpu(stats.cpu_usage_ns, system),
        "precpu_stats": cpu(stats.cpu_usage_ns - delta, system - _SECOND * cpus),
        "memory_stats": {
            "usage": stats.memory_usage,
            "limit": stats.memory_limit,
            "stats": {},
            "failcnt": stats.oom_kills,
        },
        "blkio_stats": {"io_service_bytes_recursive": None},
        "networks": {},
        "num_procs": 0,
    }


def _seconds(value: str | None, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidArgument(f"events: {name}={value!r} is not Unix seconds") from None


class _EventShaper:
    """Carte facts as Docker events, remembering container names and images seen."""

    def __init__(self, wanted: dict[str, list[str]]) -> None:
        unknown = set(wanted) - _EVENT_FILTERS
        if unknown:
            raise InvalidArgument(
                f"Carte does not support the event filter(s) {sorted(unknown)}; "
                f"use {sorted(_EVENT_FILTERS)}"
            )
        self.wanted = wanted
        self.names: dict[str, str] = {}
        self.images: dict[str, str] = {}

    def shape(self, fact: Fact) -> dict[str, Any] | None:
        kind = _ACTIONS.get(fact.topic)
        if kind is None:
            return None
        type_, action = kind
        attributes: dict[str, str] = {}
        fields = msgspec.structs.asdict(fact)
        if type_ == "container":
            name = str(fields.get("name") or self.names.get(fact.id, ""))
            self.names[fact.id] = name
            if fields.get("image"):
                self.images[fact.id] = str(fields["image"])
            attributes = {"name": name, "image": self.images.get(fact.id, "")}
            if "exit_code" in fields:
                attributes["exitCode"] = str(fields["exit_code"])
            if "signal" in fields:
                attributes["signal"] = str(fields["signal"])
            if "old_name" in fields:
                attributes["oldName"] = "/" + str(fields["old_name"])
            if action == "health_status":
                action = f"health_status: {fields.get('status')}"
        elif fields.get("name") or fields.get("names"):
            attributes["name"] = str(fields.get("name") or fields["names"][0])
        else:
            attributes["name"] = fact.id
        if not self._matches(type_, action, fact.id, attributes):
            return None
        nanoseconds = int(fact.time * _SECOND)
        event: dict[str, Any] = {
            "Type": type_,
            "Action": action,
            "Actor": {"ID": fact.id, "Attributes": attributes},
            "scope": "local",
            "time": nanoseconds // _SECOND,
            "timeNano": nanoseconds,
        }
        if type_ == "container":
            event.update(status=action, id=fact.id, **{"from": attributes["image"]})
        return event

    def _matches(self, type_: str, action: str, id_: str, attributes: dict[str, str]) -> bool:
        wanted = self.wanted
        if "type" in wanted and type_ not in wanted["type"]:
            return False
        if "event" in wanted and action.split(":")[0] not in wanted["event"]:
            return False
        for key in ("container", "image", "network", "volume"):
            if key in wanted:
                if type_ != key and not (key == "image" and type_ == "container"):
                    return False
                subject = attributes.get("image", "") if type_ != key else attributes["name"]
                ids = {subject, id_} if type_ == key else {subject}
                if not any(w in ids or (len(w) >= 12 and id_.startswith(w)) for w in wanted[key]):
                    return False
        return True


def add_observe_routes(app: QuartTrio, ctx: HandlerContext) -> None:
    bus = ctx.bus

    @app.get("/containers/<ref>/top")
    async def top(ref: str) -> Response:
        if request.args.get("ps_args"):
            raise InvalidArgument(
                "Carte does not support ps_args; docker top shows ps -ef's columns"
            )
        result = await bus.request(TopContainer(ref=ref))
        return reply({"Titles": result.titles, "Processes": result.processes})

    @app.get("/containers/<ref>/stats")
    async def stats(ref: str) -> Response:
        first = await bus.request(GetContainerStats(ref=ref))
        if not flag(request.args, "stream", default=True) or flag(request.args, "one-shot"):
            return reply(stats_shape(first))

        async def readings() -> AsyncIterator[bytes]:
            reading = first
            while True:
                yield _encoder.encode(stats_shape(reading)) + b"\n"
                await trio.sleep(STATS_INTERVAL)
                try:
                    reading = await bus.request(GetContainerStats(ref=first.id))
                except CarteError:
                    return  # stopped or removed: Docker ends the stream too

        response = Response(readings(), content_type=JSON)
        response.timeout = None
        return response

    @app.get("/events")
    async def events() -> Response:
        args = request.args
        since, until = _seconds(args.get("since"), "since"), _seconds(args.get("until"), "until")
        shaper = _EventShaper(filters(args))

        async def stream() -> AsyncIterator[bytes]:
            async with bus.subscribe(Fact, buffer=256) as facts:
                sent: set[int] = set()
                for fact in bus.journal.since(since, ()) if since is not None else []:
                    if until is not None and fact.time > until:
                        return
                    sent.add(id(fact))
                    if (event := shaper.shape(fact)) is not None:
                        yield _encoder.encode(event) + b"\n"
                if until is not None and until <= time.time():
                    return
                with trio.move_on_at(_deadline(until)):
                    async for fact in facts:
                        if id(fact) in sent:
                            sent.discard(id(fact))
                        elif (event := shaper.shape(fact)) is not None:
                            yield _encoder.encode(event) + b"\n"

        response = Response(stream(), content_type=JSON)
        response.timeout = None
        return response

    @app.get("/system/df")
    async def disk_usage() -> Response:
        totals = {row.type: row for row in await bus.request(GetDiskUsage())}
        users = Counter(usage.image_id for usage in await bus.request(ListContainerUsage()))
        images = image_rows(await bus.request(ListImages()))
        for image in images:
            image.update(Containers=users[image["Id"]], SharedSize=0)
        containers = await container_rows(bus, ListContainers(all=True), with_sizes=True)
        volumes = []
        for volume in await bus.request(ListVolumes()):
            used = await trio.to_thread.run_sync(bytes_used, volume.mountpoint)
            usage = {"Size": used, "RefCount": len(volume.in_use_by)}
            volumes.append({**volume_shape(volume), "UsageData": usage})
        return reply(
            {
                "LayersSize": totals["Images"].size if "Images" in totals else 0,
                "Images": images,
                "Containers": containers,
                "Volumes": volumes,
                "BuildCache": [],
            }
        )

    @app.post("/containers/prune")
    async def prune_containers() -> Response:
        result = await bus.request(PruneContainers(filters=filters(request.args)))
        return reply(
            {"ContainersDeleted": result.deleted or None, "SpaceReclaimed": result.space_reclaimed}
        )

    @app.post("/images/prune")
    async def prune_images() -> Response:
        wanted = filters(request.args)
        dangling = wanted.pop("dangling", ["true"])
        if wanted:
            raise InvalidArgument(
                f"Carte does not support image prune filter(s) {sorted(wanted)}; only dangling"
            )
        everything = dangling[-1].lower() in ("false", "0")
        result = await bus.request(PruneImages(all=everything))
        rows = [
            {"Untagged": item.untagged} if item.untagged else {"Deleted": item.deleted}
            for item in result.deleted
        ]
        return reply({"ImagesDeleted": rows or None, "SpaceReclaimed": result.bytes_freed})

    @app.post("/networks/prune")
    async def prune_networks() -> Response:
        if filters(request.args):
            raise InvalidArgument("Carte does not support network prune filters")
        result = await bus.request(PruneNetworks())
        return reply({"NetworksDeleted": result.deleted or None})

    @app.post("/volumes/prune")
    async def prune_volumes() -> Response:
        if filters(request.args):
            raise InvalidArgument("Carte does not support volume prune filters")
        result = await bus.request(PruneVolumes(all=True))  # API 1.41: named ones too
        return reply(
            {"VolumesDeleted": result.deleted or None, "SpaceReclaimed": result.space_reclaimed}
        )

    @app.post("/build/prune")
    async def prune_build_cache() -> Response:
        if filters(request.args):
            raise InvalidArgument("Carte does not support build cache prune filters")
        result = await bus.request(PruneBuildCache())
        return reply({"CachesDeleted": None, "SpaceReclaimed": result.bytes_freed})


def _deadline(until: float | None) -> float:
    if until is None:
        return float("inf")
    return trio.current_time() + max(until - time.time(), 0.0)
