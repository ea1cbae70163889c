"""Handler "scheduler": places the replicas of a cluster's services on its nodes.

Every daemon runs it; it does work only on a control plane:

* `PlaceService` (from the stacks handler's cluster seam) records what a service asks for
  at ``cluster/services/<stack>/<service>`` (a `ServicePlacement`: replicas, reservations,
  constraints and the CreateContainer config of each replica). Elsewhere it answers False and
  the stacks handler runs the replicas locally, as on a single machine.
* While this daemon leads (`LeaderElected` with ``is_self``), a reconcile pass runs every
  ``PERIOD`` seconds and whenever something under ``cluster/`` changes (a node's load, which
  moves with every heartbeat, aside): it feeds the nodes, the current assignments (with the
  agents' readiness reports) and the services to
  `carte.cluster.scheduler.schedule`, writes the difference to
  ``cluster/assignments/<node>/<name>`` and deletes what goes (with its
  ``cluster/status/<node>/<name>``). Every write is a transaction that holds only while
  ``cluster/leader`` is still at this leader's fence (its winning revision): a deposed leader
  that has not noticed yet cannot write (Conflict, and it stops). Each assignment also
  carries the fence, so an agent never takes an assignment older than one it already has.
  Every decision is an event: `ReplicaScheduled` (with the node, or pending with the reason)
  and `ReplicaUnschedulable`; the pending reasons are kept at ``cluster/pending/...`` for
  `carte service ps`. A new revision replaces replicas as update_config says (`_rollouts`:
  parallelism, delay, monitor, failure ratio; start-first or stop-first is the agent's);
  the rollout's state goes to ``cluster/rollouts/<stack>/<service>`` and out as
  `ClusterRolloutChanged`, for the stacks handler to complete, roll back or pause.
* Its routes (`_assignments`) serve the agents of worker nodes.

Failure: a pass that meets an unreachable store logs it and is retried next period; nothing
already assigned changes, so running replicas keep running.
"""

from __future__ import annotations

import time

import msgspec
import trio

from carte.api.cluster import (
    Assignment,
    ClusterRollout,
    Placement,
    ReplicaStatus,
    ServicePlacement,
)
from carte.api.errors import Conflict, Unavailable
from carte.api.events import (
    ClusterConfigured,
    ClusterRolloutChanged,
    GetLeadership,
    LeaderElected,
    LeadershipLost,
    ListPlacements,
    PlaceService,
    ReplicaScheduled,
    ReplicaUnschedulable,
    ServiceRemoved,
)
from carte.api.timestamps import human_duration, parse_rfc3339
from carte.cluster.scheduler import Demand, Pending, Slot, schedule
from carte.engine import Handler, HandlerContext, on
from carte.engine.store import (
    Change,
    Delete,
    Operation,
    Put,
    Store,
    follow,
    retry_unavailable,
)
from carte.handlers.cluster._assignments import (
    ASSIGNMENTS,
    PENDING,
    SCHEDULER_ROUTES,
    SERVICES,
    STATUS,
    assignment_key,
    placement_key,
    status_key,
)
from carte.handlers.cluster._control import LEADER_KEY, LOAD, ControlPlane
from carte.handlers.cluster._rollouts import ROLLOUTS, Progress, next_rollout, progress, room

PERIOD = 1.0
"""Seconds between reconcile passes of the leader (it also runs on every change)."""
_TXN_OPS = 100
"""Operations per transaction (etcd refuses more than 128 by default)."""


class SchedulerHandler(Handler):
    """Places service replicas on nodes while this control plane leads."""

    name = "scheduler"
    requires = ("membership",)
    routes = SCHEDULER_ROUTES

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.role = "none"
        self.fence = 0
        self._changed = trio.Event()
        self._lead_scope: trio.CancelScope | None = None
        self._wake = trio.Event()
        self._told: dict[tuple[str, str, int], str] = {}
        """What was last published for each replica (node name or pending reason)."""

    # --- leadership -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lead while elected; cancelled with the handler."""
        task_status.started()
        try:
            leadership = await self.ctx.bus.request(GetLeadership())
            if leadership.is_leader and not self.fence:
                self.fence = leadership.fence
        except Unavailable:
            pass
        while True:
            fence = self.fence
            if fence and self.role == "control":
                with trio.CancelScope() as scope:
                    self._lead_scope = scope
                    await self._lead(fence)
                self._lead_scope = None
            else:
                await self._changed.wait()
                self._changed = trio.Event()

    def _set_fence(self, fence: int) -> None:
        if fence == self.fence:
            return
        self.fence = fence
        if self._lead_scope is not None:
            self._lead_scope.cancel()
        self._changed.set()

    @on(ClusterConfigured)
    async def configured(self, fact: ClusterConfigured) -> None:
        self.role = fact.role
        self._changed.set()

    @on(LeaderElected)
    async def elected(self, fact: LeaderElected) -> None:
        self._set_fence(fact.fence if fact.is_self else 0)

    @on(LeadershipLost)
    async def lost(self, fact: LeadershipLost) -> None:
        self._set_fence(0)

    async def _lead(self, fence: int) -> None:
        self.ctx.log.info("scheduler leading", extra={"fence": fence})
        self._told.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_changes)
            while True:
                self._wake = trio.Event()
                try:
                    await self.reconcile(fence)
                except Conflict:
                    self.ctx.log.warning(
                        "scheduler fenced: another control plane leads now", extra={"fence": fence}
                    )
                    if self.fence == fence:
                        self.fence = 0
                    nursery.cancel_scope.cancel()
                    return
                except Unavailable as error:
                    self.ctx.log.warning("scheduling pass failed", extra={"error": error})
                with trio.move_on_after(PERIOD):
                    await self._wake.wait()
                await trio.sleep(0.05)  # let a burst of changes land before the next pass

    async def _watch_changes(self) -> None:
        async with follow(self.ctx.store, "cluster/") as changes:
            async for change in changes:
                if isinstance(change, Change) and change.key.startswith(LOAD):
                    continue  # a node's load moves with every heartbeat; placing ignores it
                self._wake.set()

    # --- one pass ---------------------------------------------------------------------------

    async def reconcile(self, fence: int) -> None:
        """Place every service once; Conflict when this daemon no longer leads."""
        store = self.ctx.store
        services = {
            (p.stack, p.service): p
            for p in (entry.decode(ServicePlacement) for entry in await store.list(SERVICES))
        }
        nodes = await ControlPlane(store, 1).nodes()
        assigned: dict[tuple[str, str], Assignment] = {}
        for entry in await store.list(ASSIGNMENTS):
            assignment = entry.decode(Assignment)
            assigned[(assignment.node, assignment.name)] = assignment
        statuses: dict[tuple[str, str], ReplicaStatus] = {}
        for entry in await store.list(STATUS):
            report = entry.decode(ReplicaStatus)
            statuses[(report.node, report.name)] = report
        slots: dict[tuple[str, str, str, int], Assignment] = {}
        current: list[Slot] = []
        kept: list[Slot] = []  # unplaceable services keep what they have
        for (node, name), assignment in assigned.items():
            status = statuses.get((node, name))
            ready = status is not None and status.ready and status.revision == assignment.revision
            slot = Slot(node, assignment.stack, assignment.service, assignment.replica, ready)
            slots[(node, slot.stack, slot.service, slot.replica)] = assignment
            service = services.get((slot.stack, slot.service))
            if service is not None and service.unplaceable:
                kept.append(slot)
            else:
                current.append(slot)
        demands = [_demand(p) for p in services.values() if not p.unplaceable]
        plan = schedule(nodes, current, demands)
        operations: list[Operation] = []
        placed: list[Assignment] = []
        now = time.time()
        by_service: dict[tuple[str, str], list[Assignment]] = {}
        for assignment in assigned.values():
            by_service.setdefault((assignment.stack, assignment.service), []).append(assignment)
        found = {
            key: progress(service, by_service.get(key, []), statuses, now)
            for key, service in services.items()
        }
        budget = {key: room(services[key], found[key], now) for key in services}
        for slot in plan.slots:
            service = services[(slot.stack, slot.service)]
            if slot.replica > len(service.requests):
                continue
            request = service.requests[slot.replica - 1]
            wanted = Assignment(
                node=slot.node,
                stack=slot.stack,
                service=slot.service,
                replica=slot.replica,
                name=str(request.get("name", "")),
                revision=str(service.revision),
                request=request,
                fence=fence,
                restart=service.restart,
                order=service.order,
                since=now,
                joins=service.joins,
                mounts_from=service.mounts_from,
                files=service.files,
            )
            have = slots.get((slot.node, slot.stack, slot.service, slot.replica))
            if have is not None and have.revision == wanted.revision and have.name == wanted.name:
                continue
            if have is not None and have.revision != wanted.revision:
                # a rolling update, paced by update_config (`_rollouts`)
                key = (slot.stack, slot.service)
                if budget[key] <= 0:
                    continue
                budget[key] -= 1
            if have is not None and have.name != wanted.name:
                operations.append(Delete(assignment_key(have.node, have.name)))
            operations.append(Put(assignment_key(slot.node, wanted.name), wanted))
            placed.append(wanted)
        for slot in plan.removed(current):
            gone = slots[(slot.node, slot.stack, slot.service, slot.replica)]
            operations.append(Delete(assignment_key(gone.node, gone.name)))
            operations.append(Delete(status_key(gone.node, gone.name)))
        pending = list(plan.pending)
        for service in services.values():
            if service.unplaceable:
                key = (service.stack, service.service)
                held = {s.replica for s in kept if s.key == key}
                pending += [
                    Pending(service.stack, service.service, number, service.unplaceable)
                    for number in range(1, service.replicas + 1)
                    if number not in held
                ]
        operations += await self._pending_writes(services, pending)
        rollouts, ended = await self._rollout_writes(services, found)
        operations += [Put(placement_key(ROLLOUTS, r.stack, r.service), r) for r in rollouts]
        operations += [Delete(placement_key(ROLLOUTS, *key)) for key in ended]
        for start in range(0, len(operations), _TXN_OPS):
            await store.txn(operations[start : start + _TXN_OPS], expect={LEADER_KEY: fence})
        await self._tell(placed, pending)
        for rollout in rollouts:
            await self.ctx.bus.publish(
                ClusterRolloutChanged(id=f"{rollout.stack}_{rollout.service}", rollout=rollout)
            )

    async def _rollout_writes(
        self,
        services: dict[tuple[str, str], ServicePlacement],
        found: dict[tuple[str, str], Progress],
    ) -> tuple[list[ClusterRollout], list[tuple[str, str]]]:
        """The rollout records this pass changes (`_rollouts.next_rollout`), and those of
        services that are gone."""
        stored = {
            (r.stack, r.service): r
            for r in (e.decode(ClusterRollout) for e in await self.ctx.store.list(ROLLOUTS))
        }
        changed = []
        for key, service in services.items():
            before = stored.get(key)
            after = next_rollout(service, before, found[key])
            if after is not None and after != before:
                changed.append(after)
        return changed, [key for key in stored if key not in services]

    async def _pending_writes(
        self, services: dict[tuple[str, str], ServicePlacement], pending: list[Pending]
    ) -> list[Operation]:
        """Puts/deletes of ``cluster/pending/<stack>/<service>`` where the reasons changed."""
        wanted: dict[str, dict[str, str]] = {}
        for item in pending:
            key = placement_key(PENDING, item.stack, item.service)
            wanted.setdefault(key, {})[str(item.replica)] = item.reason
        operations: list[Operation] = []
        existing = {entry.key: entry for entry in await self.ctx.store.list(PENDING)}
        for key, entry in existing.items():
            if key not in wanted:
                operations.append(Delete(key))
            elif entry.decode(dict[str, str]) == wanted[key]:
                del wanted[key]
        operations += [Put(key, reasons) for key, reasons in wanted.items()]
        return operations

    async def _tell(self, placed: list[Assignment], pending: list[Pending]) -> None:
        """One event per decision that changed since the last pass (after the commit)."""
        for assignment in placed:
            key = (assignment.stack, assignment.service, assignment.replica)
            self._told[key] = f"node:{assignment.node}"
            self.ctx.log.info(
                "replica scheduled",
                extra={"replica": assignment.name, "node": assignment.node},
            )
            await self.ctx.bus.publish(
                ReplicaScheduled(
                    id=assignment.name,
                    stack=assignment.stack,
                    service=assignment.service,
                    node=assignment.node,
                )
            )
        for item in pending:
            key = (item.stack, item.service, item.replica)
            if self._told.get(key) == item.reason:
                continue
            self._told[key] = item.reason
            name = f"{item.stack}_{item.service}_{item.replica}"
            self.ctx.log.warning("replica pending", extra={"replica": name, "reason": item.reason})
            await self.ctx.bus.publish(
                ReplicaScheduled(
                    id=name, stack=item.stack, service=item.service, reason=item.reason
                )
            )
            await self.ctx.bus.publish(
                ReplicaUnschedulable(
                    id=name, stack=item.stack, service=item.service, reason=item.reason
                )
            )

    # --- commands ---------------------------------------------------------------------------

    def control_store(self) -> Store:
        """The cluster's store; Conflict on a daemon that is not a control plane."""
        if self.role != "control":
            raise Conflict(
                f'this daemon is not a control plane (role "{self.role}"); ask one: '
                "carte -H tcp://CONTROL-PLANE:PORT ..."
            )
        return self.ctx.store

    @on(PlaceService)
    async def place_service(self, command: PlaceService) -> bool:
        if self.role != "control":
            return False
        placement = command.placement
        key = placement_key(SERVICES, placement.stack, placement.service)
        entry = await self.ctx.store.get(key)
        if command.remove:
            if entry is not None:
                await self.ctx.store.delete(key)
            return True
        if entry is None or entry.decode(ServicePlacement) != placement:
            await self.ctx.store.put(key, placement)
        return True

    @on(ServiceRemoved)
    async def service_removed(self, fact: ServiceRemoved) -> None:
        """A removed stack's services stop their loops without a last converge pass: their
        placements go here (the leader then unassigns their replicas)."""
        if self.role == "control":
            await retry_unavailable(
                lambda: self.ctx.store.delete(placement_key(SERVICES, fact.stack, fact.service))
            )

    @on(ListPlacements)
    async def list_placements(self, command: ListPlacements) -> list[Placement]:
        if self.role != "control":
            return []
        return await list_placements(self.ctx.store, command.stack, command.service)


def _demand(placement: ServicePlacement) -> Demand:
    return Demand(
        stack=placement.stack,
        service=placement.service,
        replicas=placement.replicas,
        cpus=placement.cpus,
        memory=placement.memory,
        constraints=tuple(placement.constraints),
        max_per_node=placement.max_per_node,
        colocate=tuple(placement.colocate),
    )


async def list_placements(store: Store, stack: str, service: str) -> list[Placement]:
    """Every replica of the matching services: assigned ones with their node and reported
    state, pending ones with the reason."""

    def wanted(item_stack: str, item_service: str) -> bool:
        return (not stack or item_stack == stack) and (not service or item_service == service)

    statuses = {
        (s.node, s.name): s
        for s in (entry.decode(ReplicaStatus) for entry in await store.list(STATUS))
    }
    reserved = {
        (p.stack, p.service): (p.cpus, p.memory)
        for p in (entry.decode(ServicePlacement) for entry in await store.list(SERVICES))
    }
    now = time.time()
    rows: list[Placement] = []
    for entry in await store.list(ASSIGNMENTS):
        a = entry.decode(Assignment)
        if not wanted(a.stack, a.service):
            continue
        status = statuses.get((a.node, a.name))
        cpus, memory = reserved.get((a.stack, a.service), (0.0, 0))
        rows.append(
            Placement(
                stack=a.stack,
                service=a.service,
                replica=a.replica,
                name=a.name,
                node=a.node,
                revision=a.revision,
                state=status.state if status is not None else "assigned",
                ready=status is not None and status.ready and status.revision == a.revision,
                container_id=status.container_id if status is not None else "",
                reason=status.reason if status is not None else "",
                ip=status.ip if status is not None else "",
                status=status_text(status, now) if status is not None else "Assigned",
                cpus=cpus,
                memory=memory,
            )
        )
    reasons: dict[tuple[str, str, int], str] = {}
    for entry in await store.list(PENDING):
        item_stack, _, item_service = entry.key.removeprefix(PENDING).partition("/")
        if wanted(item_stack, item_service):
            for replica, reason in entry.decode(dict[str, str]).items():
                reasons[(item_stack, item_service, int(replica))] = reason
    placed = set()
    for index, row in enumerate(rows):
        key = (row.stack, row.service, row.replica)
        placed.add(key)
        if not row.reason and key in reasons:  # a replica that cannot leave a drained node
            rows[index] = msgspec.structs.replace(row, reason=reasons[key])
    for (item_stack, item_service, number), reason in reasons.items():
        if (item_stack, item_service, number) not in placed:
            rows.append(
                Placement(
                    stack=item_stack,
                    service=item_service,
                    replica=number,
                    name=f"{item_stack}_{item_service}_{number}",
                    reason=reason,
                    status=f"Pending: {reason}",
                )
            )
    rows.sort(key=lambda r: (r.stack, r.service, r.replica, r.node))
    return rows


def status_text(status: ReplicaStatus, now: float) -> str:
    """A replica's state in `carte ps`'s words, from its agent's report: "Up 3 minutes
    (healthy)", "Exited (1) 2 seconds ago", "Failed: REASON", "Pending"."""
    if status.state == "running":
        text = f"Up {human_duration(now - parse_rfc3339(status.since))}" if status.since else "Up"
        if status.health == "starting":
            return f"{text} (health: starting)"
        return f"{text} ({status.health})" if status.health else text
    if status.state == "exited":
        ago = f" {human_duration(now - parse_rfc3339(status.since))} ago" if status.since else ""
        return f"Exited ({status.exit_code}){ago}"
    state = status.state.capitalize()
    return f"{state}: {status.reason}" if status.reason else state
