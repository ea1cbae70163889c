"""The autoscaler on a control plane, in-process: the service's replicas run on the cluster's
nodes, whose stats this machine cannot read.

Stand-ins (the real ones need a cluster of daemons, etcd and cgroups): the stacks handler
answers `ListReplicas` as a control plane does (one replica on its own node, three on node
"b"), and the container-tools handler answers `GetContainerStats` as it does for a container
not on this machine (`NotFound`). The autoscaler itself runs under the daemon's supervisor."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from carte.api.containers import ContainerStats
from carte.api.errors import NotFound
from carte.api.events import (
    AutoscaleDecision,
    GetContainerStats,
    ListReplicas,
    ListServices,
    ScaleService,
    ServiceUpdated,
)
from carte.api.stacks import AutoscaleSpec, ReplicaSummary, ServiceSummary
from carte.handlers.services import AutoscalerHandler
from carte.handlers.services._autoscale_rule import measure, recommend
from carte.plugins.testing import run_plugin

MEMORY = 64 << 20
SPEC = AutoscaleSpec(min=1, max=10, target_cpu_percent=0, target_memory_percent=50)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def _replica(n: int, node: str) -> ReplicaSummary:
    return ReplicaSummary(
        stack="shop",
        service="web",
        replica=n,
        revision=1,
        container_id=f"c{n}",
        name=f"shop_web.{n}",
        image="web",
        status="Up 2 minutes",
        ready=True,
        node=node,
    )


def test_replicas_elsewhere_stand_in_at_the_average() -> None:
    # one replica here at twice its target, three elsewhere: as if all four were (8)
    metric = measure([100.0], 50, ready=1, elsewhere=3, unready=0)
    assert metric is not None and recommend(4, [metric], 0.1) == 8
    # counting them as missing (idle on a scale-up) never scaled the service at all
    missing = measure([100.0], 50, ready=4, elsewhere=0, unready=0)
    assert missing is not None and recommend(4, [missing], 0.1) == 4
    assert measure([], 50, ready=0, elsewhere=4, unready=0) is None


async def test_control_plane_scales_on_the_replicas_it_can_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replicas = [_replica(1, "cp"), *(_replica(n, "b") for n in (2, 3, 4))]
    scaled = trio.Event()
    asked: list[int] = []

    async def services(_: ListServices) -> list[ServiceSummary]:
        summary = ServiceSummary(
            stack="shop", name="web", image="web", desired=4, running=4, ready=4, revision=1
        )
        summary.autoscale = SPEC
        return [summary]

    async def listed(_: ListReplicas) -> list[ReplicaSummary]:
        return replicas

    async def stats(command: GetContainerStats) -> ContainerStats:
        if command.ref != "c1":
            raise NotFound(f"no container {command.ref}")
        return ContainerStats(id="c1", name="shop_web.1", memory_usage=MEMORY, memory_limit=MEMORY)

    async def scale(command: ScaleService) -> None:
        asked.append(command.replicas)
        scaled.set()

    async with run_plugin(AutoscalerHandler, options={"sync_period": 1.0}) as plugin:
        for command, answer in (
            (ListServices, services),
            (ListReplicas, listed),
            (GetContainerStats, stats),
            (ScaleService, scale),
        ):
            plugin.respond(command, answer)  # type: ignore[arg-type]
        await plugin.publish(
            ServiceUpdated(
                id="shop_web",
                stack="shop",
                service="web",
                revision=1,
                replicas=4,
                image="web",
                network="",
                autoscale=SPEC,
            )
        )
        with trio.fail_after(30):
            await scaled.wait()
        decisions = plugin.facts(AutoscaleDecision)
    assert asked == [8]
    decision = decisions[-1]
    assert isinstance(decision, AutoscaleDecision)
    assert decision.memory_percent == 100.0
    assert decision.reason == (
        "above target; 3 replicas on other nodes taken at the average of the 1 measured here"
    )
