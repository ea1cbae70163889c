"""The scheduler library (carte.cluster.scheduler): placement, spread, capacity, constraints,
max_replicas_per_node, sharing another service's node, node loss, drain and scale, as pure
functions (milliseconds)."""

from __future__ import annotations

from collections import Counter

import pytest

from carte.api.cluster import Capacity, NodeRecord
from carte.cluster.scheduler import (
    Demand,
    InvalidConstraint,
    Plan,
    Slot,
    parse_constraint,
    schedule,
)

GIB = 1 << 30


def node(name: str, **fields: object) -> NodeRecord:
    fields.setdefault("capacity", Capacity(cpus=2.0, memory=4 * GIB))
    return NodeRecord(name=name, **fields)  # type: ignore[arg-type]


THREE = [node("n1"), node("n2"), node("n3")]


def per_node(plan: Plan, service: str = "web") -> Counter[str]:
    return Counter(slot.node for slot in plan.slots if slot.service == service)


def web(replicas: int, **fields: object) -> Demand:
    return Demand(stack="app", service="web", replicas=replicas, **fields)  # type: ignore[arg-type]


def test_six_replicas_spread_evenly_over_three_nodes() -> None:
    plan = schedule(THREE, [], [web(6)])
    assert per_node(plan) == {"n1": 2, "n2": 2, "n3": 2}
    assert sorted(slot.replica for slot in plan.slots) == [1, 2, 3, 4, 5, 6]
    assert plan.pending == []


def test_spread_prefers_the_emptier_node_when_counts_tie() -> None:
    busy = [Slot(node="n1", stack="app", service="db", replica=1)]
    plan = schedule(THREE, busy, [web(2), Demand(stack="app", service="db", replicas=1)])
    assert set(per_node(plan)) == {"n2", "n3"}


def test_placed_replicas_stay_put_when_nothing_changed() -> None:
    first = schedule(THREE, [], [web(6)])
    again = schedule(THREE, first.slots, [web(6)])
    assert again.slots == first.slots
    assert again.added(first.slots) == [] and again.removed(first.slots) == []


def test_memory_reservation_limits_how_many_fit_and_the_rest_is_pending() -> None:
    plan = schedule(THREE, [], [web(8, memory=GIB + GIB // 2)])  # 2 fit on each 4 GiB node
    assert per_node(plan) == {"n1": 2, "n2": 2, "n3": 2}
    assert [p.replica for p in plan.pending] == [7, 8]
    assert plan.pending[0].reason == "no suitable node (3 nodes insufficient memory)"


def test_cpu_reservation_counts_every_service_on_the_node() -> None:
    nodes = [node("n1", capacity=Capacity(cpus=1.0, memory=GIB))]
    plan = schedule(
        nodes,
        [],
        [web(1, cpus=0.75), Demand(stack="app", service="db", replicas=1, cpus=0.5)],
    )
    assert len(plan.slots) == 1
    assert plan.pending[0].reason == "no suitable node (1 node insufficient CPU)"


def test_label_and_hostname_constraints() -> None:
    nodes = [
        node("n1", labels={"zone": "a"}),
        node("n2", labels={"zone": "b"}),
        node("n3", labels={"zone": "a"}),
    ]
    plan = schedule(nodes, [], [web(4, constraints=("node.labels.zone==a",))])
    assert per_node(plan) == {"n1": 2, "n3": 2}
    plan = schedule(nodes, [], [web(4, constraints=("node.hostname!=n1",))])
    assert per_node(plan) == {"n2": 2, "n3": 2}
    plan = schedule(nodes, [], [web(1, constraints=("node.labels.zone==c",))])
    assert plan.slots == []
    assert plan.pending[0].reason == ("no suitable node (3 nodes not matching node.labels.zone==c)")


def test_role_constraint_takes_manager_for_control() -> None:
    nodes = [node("cp", role="control"), node("w1"), node("w2")]
    assert set(per_node(schedule(nodes, [], [web(4, constraints=("node.role==worker",))]))) == {
        "w1",
        "w2",
    }
    assert set(per_node(schedule(nodes, [], [web(2, constraints=("node.role==manager",))]))) == {
        "cp"
    }


def test_max_replicas_per_node() -> None:
    plan = schedule(THREE, [], [web(5, max_per_node=1)])
    assert per_node(plan) == {"n1": 1, "n2": 1, "n3": 1}
    assert [p.replica for p in plan.pending] == [4, 5]
    assert "3 nodes at max_replicas_per_node (1)" in plan.pending[0].reason


def test_lowering_max_replicas_per_node_moves_the_extra_replica() -> None:
    two = [node("n1"), node("n2")]
    current = [Slot(node="n1", stack="app", service="web", replica=n, ready=True) for n in (1, 2)]
    plan = schedule(two, current, [web(2, max_per_node=1)])
    # the extra stays until its copy on n2 is ready
    assert sorted((s.node, s.replica) for s in plan.slots) == [("n1", 1), ("n1", 2), ("n2", 2)]


def test_down_and_drained_nodes_get_nothing_new() -> None:
    nodes = [node("n1", status="down"), node("n2", availability="drain"), node("n3")]
    plan = schedule(nodes, [], [web(3)])
    assert per_node(plan) == {"n3": 3}
    plan = schedule(nodes[:2], [], [web(1)])
    assert plan.pending[0].reason == "no suitable node (1 node down, 1 node drained)"


def test_a_down_nodes_replicas_are_replaced_on_the_others_at_once() -> None:
    placed = schedule(THREE, [], [web(6)]).slots
    ready = [Slot(s.node, s.stack, s.service, s.replica, ready=True) for s in placed]
    nodes = [node("n1"), node("n2", status="down"), node("n3")]
    plan = schedule(nodes, ready, [web(6)])
    assert per_node(plan) == {"n1": 3, "n3": 3}
    assert {s.node for s in plan.removed(ready)} == {"n2"}
    # the replicas keep their numbers: the two of n2 now run elsewhere
    assert sorted(s.replica for s in plan.slots) == [1, 2, 3, 4, 5, 6]


def test_node_back_up_is_not_rebalanced_onto() -> None:
    nodes = [node("n1"), node("n2", status="down"), node("n3")]
    plan = schedule(nodes, [], [web(6)])
    back = schedule(THREE, plan.slots, [web(6)])
    assert back.slots == plan.slots


def test_drain_moves_start_first_and_never_lowers_ready_replicas() -> None:
    placed = schedule(THREE, [], [web(6)]).slots
    ready = [Slot(s.node, s.stack, s.service, s.replica, ready=True) for s in placed]
    draining = [node("n1", availability="drain"), node("n2"), node("n3")]
    step = schedule(draining, ready, [web(6)])
    # copies placed on n2/n3, the n1 replicas kept meanwhile
    assert per_node(step) == {"n1": 2, "n2": 3, "n3": 3}
    assert step.removed(ready) == []
    # the copies become ready: then (and only then) the n1 replicas go
    reported = [Slot(s.node, s.stack, s.service, s.replica, ready=True) for s in step.slots]
    done = schedule(draining, reported, [web(6)])
    assert per_node(done) == {"n2": 3, "n3": 3}
    assert {s.node for s in done.removed(reported)} == {"n1"}


def test_drain_with_nowhere_to_go_keeps_the_replica_and_says_why() -> None:
    current = [Slot(node="n1", stack="app", service="web", replica=1, ready=True)]
    nodes = [node("n1", availability="drain"), node("n2", status="down")]
    plan = schedule(nodes, current, [web(1)])
    assert plan.slots == current
    assert plan.pending[0].reason == (
        "cannot leave n1: no suitable node (1 node down, 1 node drained)"
    )


def test_relabelled_node_moves_replicas_that_no_longer_match() -> None:
    current = [Slot(node="n1", stack="app", service="web", replica=1, ready=True)]
    nodes = [node("n1", labels={"zone": "b"}), node("n2", labels={"zone": "a"})]
    plan = schedule(nodes, current, [web(1, constraints=("node.labels.zone==a",))])
    assert sorted(s.node for s in plan.slots) == ["n1", "n2"]


def test_scale_down_removes_the_highest_numbers_and_scale_up_adds() -> None:
    placed = schedule(THREE, [], [web(6)]).slots
    down = schedule(THREE, placed, [web(2)])
    assert sorted(s.replica for s in down.slots) == [1, 2]
    up = schedule(THREE, down.slots, [web(4)])
    assert sorted(s.replica for s in up.slots) == [1, 2, 3, 4]
    assert len(set(per_node(up))) == 3


def test_removed_service_and_removed_node_lose_their_slots() -> None:
    placed = schedule(THREE, [], [web(3)]).slots
    assert schedule(THREE, placed, []).slots == []
    two = schedule(THREE[:2], placed, [web(3)])
    assert {s.node for s in two.slots} == {"n1", "n2"}


def test_services_are_interleaved_so_one_does_not_starve_another() -> None:
    nodes = [node("n1", capacity=Capacity(cpus=2.0, memory=2 * GIB))]
    plan = schedule(
        nodes,
        [],
        [
            Demand(stack="app", service="a", replicas=4, memory=GIB),
            Demand(stack="app", service="b", replicas=4, memory=GIB),
        ],
    )
    assert Counter(s.service for s in plan.slots) == {"a": 1, "b": 1}


def test_a_service_sharing_another_s_node_goes_where_that_one_runs_and_stays() -> None:
    db = Demand(stack="app", service="db", replicas=1)
    side = Demand(stack="app", service="side", replicas=2, colocate=("db",))
    plan = schedule(THREE, [], [side, db])
    (home,) = per_node(plan, "db")
    assert per_node(plan, "side") == {home: 2} and plan.pending == []
    assert schedule(THREE, plan.slots, [side, db]).slots == plan.slots
    elsewhere = [node(n.name, status="down") if n.name == home else n for n in THREE]
    moved = schedule(elsewhere, [s for s in plan.slots if s.service == "side"], [side])
    assert not moved.slots and "2 nodes not running app_db" in moved.pending[0].reason


def test_bad_constraint_leaves_the_service_pending_with_the_error() -> None:
    plan = schedule(THREE, [], [web(2, constraints=("zone=a",))])
    assert plan.slots == []
    assert len(plan.pending) == 2
    assert 'placement constraint "zone=a" is not valid' in plan.pending[0].reason


@pytest.mark.parametrize(
    ("text", "attribute", "equal", "value"),
    [
        ("node.labels.zone==a", "node.labels.zone", True, "a"),
        ("node.hostname != x", "node.hostname", False, "x"),
        ("node.role==worker", "node.role", True, "worker"),
        ("node.platform.os==linux", "node.platform.os", True, "linux"),
    ],
)
def test_parse_constraint(text: str, attribute: str, equal: bool, value: str) -> None:
    parsed = parse_constraint(text)
    assert (parsed.attribute, parsed.equal, parsed.value) == (attribute, equal, value)


@pytest.mark.parametrize("text", ["zone==a", "node.labels.==a", "node.hostname==", "node.role"])
def test_parse_constraint_refuses(text: str) -> None:
    with pytest.raises(InvalidConstraint, match="ATTRIBUTE==VALUE"):
        parse_constraint(text)


def test_thirty_replicas_over_three_nodes_is_fast() -> None:
    import time

    nodes = [node(f"n{i}") for i in range(3)]
    demands = [Demand(stack="app", service=f"s{i}", replicas=10) for i in range(10)]
    started = time.perf_counter()
    plan = schedule(nodes, [], demands)
    again = schedule(nodes, plan.slots, demands)
    assert time.perf_counter() - started < 0.5
    assert len(again.slots) == 100
    assert Counter(s.node for s in again.slots).most_common(1)[0][1] <= 34
