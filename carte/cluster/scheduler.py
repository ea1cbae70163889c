"""Placing service replicas on nodes: a pure function of nodes, current assignments and
what each service asks for (no trio, no store; the scheduler handler feeds it).

`schedule` returns the whole new assignment set. Its rules, in order:

* A replica is identified by (stack, service, replica number); numbers 1..replicas are
  wanted, higher ones go (scale down).
* A replica stays where it is while its node is ready, active and still matches the
  service's constraints (no churn: a node coming back is not rebalanced onto).
* A replica on a down node is placed elsewhere at once (it is not running anyway).
* A replica on a drained node, or on one it no longer fits (labels, constraints), is
  *moved* start-first: a copy is placed on another node and the old one is kept until the
  copy is ready, so a drain never lowers the number of ready replicas. With nowhere to go
  it stays, and says why.
* A new replica goes to the eligible node (ready, active, matching every constraint, under
  ``max_replicas_per_node``, with the reserved CPUs and memory free, running a replica of
  each service it must share a node with) holding the fewest
  replicas of its service, then the fewest replicas overall, then by name.
* A replica that fits nowhere is `Pending` with the reason, counted per cause as Swarm
  says it ("no suitable node (1 node down, 2 nodes not matching node.labels.zone==a)").

Constraints are Compose's ``deploy.placement.constraints``: ``node.hostname``,
``node.id`` (both the node's name), ``node.role`` (``manager`` is ``control``),
``node.labels.KEY``, ``node.platform.os``/``node.platform.arch`` with ``==`` or ``!=``.
`parse_constraint` raises `InvalidConstraint` naming the bad one.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from carte.api.cluster import NodeRecord

__all__ = [
    "Constraint",
    "Demand",
    "InvalidConstraint",
    "Pending",
    "Plan",
    "Slot",
    "parse_constraint",
    "schedule",
]


class InvalidConstraint(ValueError):
    """A placement constraint that is not ``ATTRIBUTE==VALUE`` / ``ATTRIBUTE!=VALUE`` over a
    known attribute; the message names it and the accepted forms."""


@dataclass(frozen=True)
class Constraint:
    attribute: str
    """``node.hostname``, ``node.role``, ``node.labels.zone`` ..."""
    equal: bool
    value: str

    def __str__(self) -> str:
        return f"{self.attribute}{'==' if self.equal else '!='}{self.value}"

    def matches(self, node: NodeRecord) -> bool:
        actual = _attribute(node, self.attribute)
        if self.attribute == "node.role":
            same = actual == ("control" if self.value == "manager" else self.value)
        else:
            same = actual == self.value
        return same if self.equal else not same


_ATTRIBUTES = ("node.hostname", "node.id", "node.role", "node.platform.os", "node.platform.arch")


def parse_constraint(text: str) -> Constraint:
    """``node.labels.zone==a`` -> Constraint; InvalidConstraint for anything else."""
    for operator in ("==", "!="):
        attribute, found, value = text.partition(operator)
        if found:
            attribute, value = attribute.strip(), value.strip()
            known = attribute in _ATTRIBUTES or (
                attribute.startswith("node.labels.") and len(attribute) > len("node.labels.")
            )
            if known and value:
                return Constraint(attribute=attribute, equal=operator == "==", value=value)
            break
    raise InvalidConstraint(
        f'placement constraint "{text}" is not valid; use ATTRIBUTE==VALUE or '
        "ATTRIBUTE!=VALUE with node.hostname, node.id, node.role, node.labels.KEY, "
        "node.platform.os or node.platform.arch"
    )


def _attribute(node: NodeRecord, attribute: str) -> str | None:
    if attribute in ("node.hostname", "node.id"):
        return node.name
    if attribute == "node.role":
        return node.role
    if attribute == "node.platform.os":
        return node.labels.get("os", platform.system().lower())
    if attribute == "node.platform.arch":
        return node.labels.get("arch", platform.machine())
    return node.labels.get(attribute.removeprefix("node.labels."))


class _OfService:
    """What belongs to one service of one stack; ``key`` names that service."""

    stack: str
    service: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.stack, self.service)


@dataclass(frozen=True)
class Demand(_OfService):
    """What one service asks for."""

    stack: str
    service: str
    replicas: int
    cpus: float = 0.0
    """Reserved CPUs per replica (deploy.resources.reservations.cpus)."""
    memory: int = 0
    """Reserved bytes per replica (deploy.resources.reservations.memory)."""
    constraints: tuple[str, ...] = ()
    max_per_node: int = 0
    """0: no limit."""
    colocate: tuple[str, ...] = ()
    """Services of the same stack a node must run a replica of (network_mode service:,
    volumes_from): their replicas are placed first."""


@dataclass(frozen=True)
class Slot(_OfService):
    """One replica on one node (an assignment, as the scheduler reasons about it)."""

    node: str
    stack: str
    service: str
    replica: int
    ready: bool = False
    """Reported ready by the node's agent (only matters for a replica being moved)."""


@dataclass(frozen=True)
class Pending(_OfService):
    stack: str
    service: str
    replica: int
    reason: str


@dataclass
class Plan:
    """The new assignment set (``slots``) and the replicas that could not be placed."""

    slots: list[Slot] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)

    def added(self, current: Iterable[Slot]) -> list[Slot]:
        """Slots of this plan that ``current`` lacks (to write)."""
        before = {_identity(slot) for slot in current}
        return [slot for slot in self.slots if _identity(slot) not in before]

    def removed(self, current: Iterable[Slot]) -> list[Slot]:
        """Slots of ``current`` this plan drops (to delete)."""
        after = {_identity(slot) for slot in self.slots}
        return [slot for slot in current if _identity(slot) not in after]


def _identity(slot: Slot) -> tuple[str, str, str, int]:
    return (slot.node, slot.stack, slot.service, slot.replica)


class _Ledger:
    """Free capacity and replica counts per node while a plan is built."""

    def __init__(self, nodes: Sequence[NodeRecord], demands: dict[tuple[str, str], Demand]):
        self.nodes = {node.name: node for node in nodes}
        self.demands = demands
        self.cpus = {node.name: node.capacity.cpus for node in nodes}
        self.memory = {node.name: node.capacity.memory for node in nodes}
        self.total: Counter[str] = Counter()
        self.per_service: Counter[tuple[str, str, str]] = Counter()

    def take(self, slot: Slot) -> None:
        demand = self.demands.get(slot.key)
        if demand is not None and slot.node in self.cpus:
            self.cpus[slot.node] -= demand.cpus
            self.memory[slot.node] -= demand.memory
        self.total[slot.node] += 1
        self.per_service[(slot.node, *slot.key)] += 1

    def refusal(self, node: NodeRecord, demand: Demand, constraints: list[Constraint]) -> str:
        """Why ``node`` cannot take one more replica of ``demand`` ('' if it can)."""
        if node.status != "ready":
            return "down"
        if node.availability != "active":
            return "drained"
        for constraint in constraints:
            if not constraint.matches(node):
                return f"not matching {constraint}"
        for other in demand.colocate:
            if not self.per_service[(node.name, demand.stack, other)]:
                return f"not running {demand.stack}_{other}"
        if demand.max_per_node and self.per_service[(node.name, *demand.key)] >= (
            demand.max_per_node
        ):
            return f"at max_replicas_per_node ({demand.max_per_node})"
        if demand.cpus and self.cpus[node.name] < demand.cpus - 1e-9:
            return "insufficient CPU"
        if demand.memory and self.memory[node.name] < demand.memory:
            return "insufficient memory"
        return ""

    def best(self, demand: Demand, constraints: list[Constraint]) -> tuple[str, str]:
        """(node, '') for the best node for one more replica, or ('', reason)."""
        fits, refusals = [], Counter[str]()
        for node in self.nodes.values():
            refusal = self.refusal(node, demand, constraints)
            if refusal:
                refusals[refusal] += 1
            else:
                fits.append(node.name)
        if fits:
            chosen = min(
                fits,
                key=lambda name: (self.per_service[(name, *demand.key)], self.total[name], name),
            )
            return chosen, ""
        if not refusals:
            return "", "no suitable node (the cluster has no nodes)"
        parts = [
            f"{count} node{'s' if count > 1 else ''} {why}"
            for why, count in sorted(refusals.items())
        ]
        return "", f"no suitable node ({', '.join(parts)})"


def schedule(
    nodes: Sequence[NodeRecord], current: Sequence[Slot], demands: Sequence[Demand]
) -> Plan:
    """The new assignment set for ``demands`` given ``current`` (see the module docstring).

    A service whose constraints do not parse gets all its replicas pending with the error
    (its current slots are kept untouched). Slots of services not in ``demands`` go.
    """
    wanted = {demand.key: demand for demand in demands}
    ledger = _Ledger(nodes, wanted)
    plan = Plan()
    by_service: dict[tuple[str, str], list[Slot]] = {}
    for slot in current:
        if slot.key in wanted:
            by_service.setdefault(slot.key, []).append(slot)
    parsed: dict[tuple[str, str], list[Constraint]] = {}
    for demand in demands:
        try:
            parsed[demand.key] = [parse_constraint(text) for text in demand.constraints]
        except InvalidConstraint as error:
            for slot in by_service.pop(demand.key, []):
                ledger.take(slot)
                plan.slots.append(slot)
            for number in range(1, demand.replicas + 1):
                plan.pending.append(Pending(demand.stack, demand.service, number, str(error)))
    # pass 1: what stays where it is (counted first, so new replicas see the real load)
    homeless: dict[tuple[str, str], list[tuple[int, Slot | None]]] = {}
    first = sorted(by_service, key=lambda key: (bool(wanted[key].colocate), key))
    for key in first:  # a service that shares another's node is counted after it
        slots = by_service[key]
        demand, constraints = wanted[key], parsed.get(key, [])
        if key not in parsed:
            continue
        numbers: dict[int, list[Slot]] = {}
        for slot in slots:
            if 1 <= slot.replica <= demand.replicas:
                numbers.setdefault(slot.replica, []).append(slot)
        for number in range(1, demand.replicas + 1):
            copies = numbers.get(number, [])
            staying = [s for s in copies if _stays(ledger, s, demand, constraints)]
            leaving = [s for s in copies if s not in staying and _alive(ledger, s)]
            if staying:
                keep = max(staying, key=lambda s: (s.ready, s.node))
                ledger.take(keep)
                plan.slots.append(keep)
                # an old copy is kept until the new one is ready (start-first move)
                if not keep.ready:
                    for old in leaving:
                        ledger.take(old)
                        plan.slots.append(old)
            elif leaving:
                old = max(leaving, key=lambda s: (s.ready, s.node))
                ledger.take(old)
                plan.slots.append(old)
                homeless.setdefault(key, []).append((number, old))
            else:
                homeless.setdefault(key, []).append((number, None))
    for demand in demands:
        if demand.key in parsed and demand.key not in by_service:
            homeless[demand.key] = [(n, None) for n in range(1, demand.replicas + 1)]
    # pass 2: place new replicas and copies of moving ones, one at a time, services interleaved
    # so that no service takes all the room before another gets its first replica
    queues = {key: list(items) for key, items in homeless.items()}
    # services that must share a node with others come after them in each round
    order = sorted(queues, key=lambda key: (bool(wanted[key].colocate), key))
    while any(queues.values()):
        for key in order:
            if not queues[key]:
                continue
            number, moving = queues[key].pop(0)
            demand = wanted[key]
            node, reason = ledger.best(demand, parsed[key])
            if node:
                slot = Slot(node=node, stack=demand.stack, service=demand.service, replica=number)
                ledger.take(slot)
                plan.slots.append(slot)
            elif moving is not None:
                plan.pending.append(
                    Pending(
                        demand.stack,
                        demand.service,
                        number,
                        f"cannot leave {moving.node}: {reason}",
                    )
                )
            else:
                plan.pending.append(Pending(demand.stack, demand.service, number, reason))
    plan.slots.sort(key=lambda s: (s.stack, s.service, s.replica, s.node))
    plan.pending.sort(key=lambda p: (p.stack, p.service, p.replica))
    return plan


def _alive(ledger: _Ledger, slot: Slot) -> bool:
    node = ledger.nodes.get(slot.node)
    return node is not None and node.status == "ready"


def _stays(ledger: _Ledger, slot: Slot, demand: Demand, constraints: list[Constraint]) -> bool:
    node = ledger.nodes.get(slot.node)
    if node is None or node.status != "ready" or node.availability != "active":
        return False
    if demand.max_per_node and ledger.per_service[(node.name, *demand.key)] >= (
        demand.max_per_node
    ):
        return False
    if any(not ledger.per_service[(node.name, demand.stack, o)] for o in demand.colocate):
        return False
    return all(constraint.matches(node) for constraint in constraints)
