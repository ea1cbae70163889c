"""The scheduler handler in-process (carte.plugins.testing: real bus, in-memory SQLite store):
what it writes to the store as the leader, pending reasons and their events, rolling updates
gated on readiness (completed, or failed and stopped), and fencing — a deposed leader's
writes are refused by the store."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable

import msgspec
import trio

from carte.api.cluster import (
    Assignment,
    Capacity,
    LeaderRecord,
    NodeRecord,
    ReplicaStatus,
    ServicePlacement,
)
from carte.api.events import (
    ClusterConfigured,
    ClusterRolloutChanged,
    LeaderElected,
    ListPlacements,
    PlaceService,
    ReplicaUnschedulable,
)
from carte.engine import Store
from carte.handlers.cluster import SchedulerHandler
from carte.plugins.testing import PluginRun, run_plugin

GIB = 1 << 30


def placement(replicas: int, revision: int = 1, **fields: object) -> ServicePlacement:
    requests = [{"image": "busybox", "name": f"app_web_{n}"} for n in range(1, replicas + 1)]
    return ServicePlacement(
        stack="app",
        service="web",
        revision=revision,
        replicas=replicas,
        requests=requests,
        **fields,  # type: ignore[arg-type]
    )


async def assignments(store: Store) -> list[Assignment]:
    return [entry.decode(Assignment) for entry in await store.list("cluster/assignments/")]


async def revisions(run: PluginRun) -> list[str]:
    """The revision of every assignment, sorted."""
    return sorted(a.revision for a in await assignments(run.store))


async def revisions_are(run: PluginRun, *wanted: str) -> bool:
    return await revisions(run) == list(wanted)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` (it reads the store the handler's own task writes) for 5 s at most."""
    with trio.move_on_after(5):
        while not await check():  # noqa: ASYNC110
            await trio.sleep(0.01)
        return
    raise AssertionError(f"{what}: not within 5 s")


async def assigned(run: PluginRun[SchedulerHandler], count: int) -> None:
    """Wait until the scheduler wrote ``count`` assignments."""

    async def enough() -> bool:
        return len(await assignments(run.store)) == count

    await eventually(enough, f"{count} assignments")


async def lead(run: PluginRun[SchedulerHandler], nodes: list[str]) -> int:
    """Nodes alive, this daemon a control plane elected at the returned fence."""
    for name in nodes:
        record = NodeRecord(name=name, capacity=Capacity(cpus=2.0, memory=4 * GIB))
        await run.store.put(f"cluster/members/{name}", record)
        await run.store.put(f"cluster/nodes/{name}", record)
    fence = await run.store.put("cluster/leader", LeaderRecord(name="cp"))
    await run.publish(ClusterConfigured(id="cp", role="control"))
    await run.publish(LeaderElected(id="cp", is_self=True, fence=fence))
    return fence


async def mark_ready(store: Store, revision: str) -> None:
    for a in await assignments(store):
        if a.revision == revision:
            status = ReplicaStatus(node=a.node, name=a.name, state="running", ready=True)
            status = msgspec.structs.replace(status, revision=a.revision)
            await store.put(f"cluster/status/{a.node}/{a.name}", status)


async def test_not_a_control_plane_places_nothing() -> None:
    async with run_plugin(SchedulerHandler) as run:
        assert await run.request(PlaceService(placement=placement(2))) is False
        assert await run.request(ListPlacements(stack="app")) == []


async def test_the_leader_assigns_with_its_fence_and_spreads() -> None:
    async with run_plugin(SchedulerHandler) as run:
        fence = await lead(run, ["n1", "n2"])
        assert await run.request(PlaceService(placement=placement(4)))

        await assigned(run, 4)
        placed = await assignments(run.store)
        assert sorted(a.node for a in placed) == ["n1", "n1", "n2", "n2"]
        assert {a.fence for a in placed} == {fence}
        assert {a.name for a in placed} == {f"app_web_{n}" for n in range(1, 5)}
        rows = await run.request(ListPlacements(stack="app", service="web"))
        assert [(r.replica, r.state) for r in rows] == [(n, "assigned") for n in range(1, 5)]
        assert {r.status for r in rows} == {"Assigned"}


async def test_a_replica_that_fits_nowhere_is_pending_with_its_reason() -> None:
    async with run_plugin(SchedulerHandler) as run:
        await lead(run, ["n1", "n2"])
        wish = placement(2, constraints=["node.labels.zone==a"])
        await run.request(PlaceService(placement=wish))

        async def told() -> bool:
            return len(run.facts(ReplicaUnschedulable)) == 2

        await eventually(told, "2 ReplicaUnschedulable")
        rows = await run.request(ListPlacements(stack="app"))
        assert [r.node for r in rows] == ["", ""]
        assert rows[0].reason == "no suitable node (2 nodes not matching node.labels.zone==a)"
        assert rows[0].status == f"Pending: {rows[0].reason}"
        await trio.sleep(0.3)  # more passes: the same decision is not told again
        assert len(run.facts(ReplicaUnschedulable)) == 2


async def test_placements_word_what_the_agents_report_as_ps_does() -> None:
    async with run_plugin(SchedulerHandler) as run:
        await lead(run, ["n1", "n2"])
        await run.request(PlaceService(placement=placement(3)))

        await assigned(run, 3)
        ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=3)
        since = ago.isoformat().replace("+00:00", "Z")
        reports = {
            1: {"state": "running", "ip": "10.0.0.2", "health": "healthy"},
            2: {"state": "exited", "exit_code": 1},
            3: {"state": "failed", "reason": 'image "nope" not found'},
        }
        for a in await assignments(run.store):
            report = reports[a.replica]
            status = ReplicaStatus(node=a.node, name=a.name, since=since, **report)  # type: ignore[arg-type]
            await run.store.put(f"cluster/status/{a.node}/{a.name}", status)
        rows = await run.request(ListPlacements(stack="app"))
        assert [(r.status, r.ip) for r in rows] == [
            ("Up 3 seconds (healthy)", "10.0.0.2"),
            ("Exited (1) 3 seconds ago", ""),
            ('Failed: image "nope" not found', ""),
        ]


async def test_a_new_revision_rolls_one_replica_at_a_time_once_ready() -> None:
    async with run_plugin(SchedulerHandler) as run:
        await lead(run, ["n1", "n2"])
        await run.request(PlaceService(placement=placement(3)))
        await eventually(lambda: revisions_are(run, "1", "1", "1"), "3 of revision 1")
        await mark_ready(run.store, "1")
        update = placement(3, revision=2, parallelism=1, monitor=0)
        await run.request(PlaceService(placement=update))
        await eventually(lambda: revisions_are(run, "1", "1", "2"), "1 replaced")
        await trio.sleep(0.3)
        assert await revisions(run) == ["1", "1", "2"], "the next waits for the new one's readiness"
        await mark_ready(run.store, "2")
        await eventually(lambda: revisions_are(run, "1", "2", "2"), "2 replaced")


async def test_a_rollout_completes_and_one_whose_replica_fails_stops_there() -> None:
    async with run_plugin(SchedulerHandler) as run:
        await lead(run, ["n1", "n2"])
        await run.request(PlaceService(placement=placement(2)))

        def told(state: str) -> list[ClusterRolloutChanged]:
            return [f for f in run.facts(ClusterRolloutChanged) if f.rollout.state == state]

        async def said(state: str) -> bool:
            return bool(told(state))

        await eventually(lambda: revisions_are(run, "1", "1"), "2 of revision 1")
        await mark_ready(run.store, "1")
        await run.request(PlaceService(placement=placement(2, revision=2, monitor=0)))
        await eventually(lambda: revisions_are(run, "1", "2"), "one at a time")
        await mark_ready(run.store, "2")
        await eventually(lambda: revisions_are(run, "2", "2"), "the second once the first is ready")
        assert not told("completed")
        await mark_ready(run.store, "2")
        await eventually(lambda: said("completed"), "completed")
        assert await revisions(run) == ["2", "2"] and told("completed")[0].rollout.revision == 2

        await run.request(PlaceService(placement=placement(2, revision=3, monitor=0)))
        await eventually(lambda: revisions_are(run, "2", "3"), "the first of revision 3")
        (new,) = [a for a in await assignments(run.store) if a.revision == "3"]
        broken = ReplicaStatus(node=new.node, name=new.name, state="failed", revision="3")
        broken = msgspec.structs.replace(broken, reason="app_web_1 exited (1)")
        await run.store.put(f"cluster/status/{new.node}/{new.name}", broken)
        await eventually(lambda: said("failed"), "failed")
        assert "app_web_1 exited (1)" in told("failed")[0].rollout.message
        await trio.sleep(0.3)
        assert await revisions(run) == ["2", "3"], "a failed rollout replaces no more"


async def test_a_deposed_leader_cannot_write() -> None:
    async with run_plugin(SchedulerHandler) as run:
        await lead(run, ["n1", "n2"])
        await run.request(PlaceService(placement=placement(2)))

        await assigned(run, 2)
        # another control plane won meanwhile (this one has not heard of it yet)
        await run.store.put("cluster/leader", LeaderRecord(name="other"))
        await run.request(PlaceService(placement=placement(5)))
        await trio.sleep(0.3)
        assert len(await assignments(run.store)) == 2
        assert run.handler.fence == 0, "it stopped leading"
