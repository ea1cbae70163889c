"""Converging one service: the replicas its record asks for, healed when they exit or turn
unhealthy, replaced batch by batch when its revision changes (rolling update gated on
readiness plus the monitor window, rolled back or paused on failure).

One task per service (`Converger.service_loop`) does all changes to that service's replicas,
so a scale, a heal and a rollout never race. Every stop of a ready replica publishes
`ReplicaNotReady` first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec
import trio

from carte.api.cluster import ASSIGNMENT_LABEL
from carte.api.containers import ContainerSummary, PortSpec
from carte.api.errors import CarteError, Conflict, NotFound
from carte.api.events import (
    ConnectNetwork,
    DrainReplica,
    ExecInContainer,
    InspectContainer,
    ListContainers,
    ReplicaNotReady,
    ReplicaReady,
    RolloutChanged,
    ServiceUpdated,
    StartContainer,
    StopContainer,
)
from carte.api.stacks import SERVICE_LABEL, STACK_LABEL, AutoscaleSpec, Rollout
from carte.handlers.stacks._cluster import place_in_cluster
from carte.handlers.stacks._files import shared_mounts, write_files
from carte.handlers.stacks._readiness import watch_readiness
from carte.handlers.stacks._records import ServiceRecord, load_service, service_key
from carte.handlers.stacks._replicas import Replica, exit_code_of, replica_number, revision_of
from carte.handlers.stacks._start import create_and_start, remove_if_present
from carte.stack import image_name, network_name, normalize, replica_config, resources
from carte.stack.model import Service, UpdateConfig
from carte.stack.replica import file_refs, replica_aliases
from carte.stack.validate import Ceilings, port_count

if TYPE_CHECKING:
    from carte.engine import HandlerContext

# How often a service loop looks again without being woken (a safety net for missed facts).
_POLL = 5.0
# Between a ready replica's ReplicaNotReady and its stop: the services handler's nft update
# is asynchronous (a subscriber), so the stop waits until it is applied (DrainReplica, at most
# _DRAIN_MAX s on a busy host), then _DRAIN s more for connections that reached the replica
# just before to be accepted before its server stops accepting.
_DRAIN = 0.5
_DRAIN_MAX = 10.0
# How long a replica without a readiness probe or healthcheck must stay up to count as started.
_NO_PROBE_GRACE = 30.0
# The shortest readiness deadline of a rolling update's new replica, counted from its start:
# a replica that takes 22 s to turn healthy on two busy cores is slow, not failed.
READY_FLOOR = 60.0


class RolloutFailed(Exception):
    pass


class Converger:
    """Replicas of every service; owned by the stacks handler, runs in its nursery."""

    def __init__(self, ctx: HandlerContext, nursery: trio.Nursery, lock: trio.Lock) -> None:
        self.ctx = ctx
        self.nursery = nursery
        self.lock = lock  # held by every writer of service records
        self.replicas: dict[str, Replica] = {}
        self._wake: dict[tuple[str, str], trio.Event] = {}
        self._loops: dict[tuple[str, str], trio.CancelScope] = {}
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._refused: set[tuple[str, str]] = set()
        """Services whose stored record is over the ceilings (logged once, not converged)."""
        self.stopped: dict[str, tuple[str, str]] = {}
        """Replicas a user stopped (container id -> stack, service): kept, not replaced, until
        started or removed (as Compose keeps a stopped container; forgotten on restart)."""

    # --- loops ---------------------------------------------------------------------------

    def ensure_loop(self, stack: str, service: str) -> None:
        key = (stack, service)
        if key not in self._loops:
            scope = trio.CancelScope()
            self._loops[key] = scope
            self.nursery.start_soon(self._service_loop, stack, service, scope)
        self.kick(stack, service)

    def stop_loops(self, stack: str) -> None:
        """Cancel the converging tasks of a stack (being removed)."""
        for (owner, _service), scope in list(self._loops.items()):
            if owner == stack:
                scope.cancel()

    async def start_stopped(self, stack: str, service: str) -> None:
        """Start the replicas of a service a user stopped: an apply wants them running, as
        Compose's `up` starts stopped containers. A failed start is logged and left."""
        for container_id, key in list(self.stopped.items()):
            if key == (stack, service):
                try:
                    await self.ctx.bus.request(StartContainer(ref=container_id))
                except CarteError as error:
                    self.ctx.log.warning("stopped replica %s: %s", container_id[:12], error.message)

    def kick(self, stack: str, service: str) -> None:
        event = self._wake.get((stack, service))
        if event is not None:
            event.set()

    async def _service_loop(self, stack: str, service: str, scope: trio.CancelScope) -> None:
        """Converge until the service's record is gone and its replicas removed. An error of
        one pass is logged and the pass retried after a poll interval."""
        key = (stack, service)
        with scope:
            while True:
                self._wake[key] = trio.Event()
                try:
                    done = await self.converge(stack, service)
                except CarteError as error:
                    self.ctx.log.warning("service %s_%s: %s", stack, service, error.message)
                    done = False
                if done:
                    break
                with trio.move_on_after(_POLL):
                    await self._wake[key].wait()
        self._loops.pop(key, None)
        self._wake.pop(key, None)

    # --- one pass ------------------------------------------------------------------------

    async def rows(self, stack: str, service: str) -> list[ContainerSummary]:
        # values of one filter key are OR-ed by the containers handler: filter the service here
        filters = {"label": [f"{STACK_LABEL}={stack}"]}
        rows = await self.ctx.bus.request(ListContainers(all=True, filters=filters))
        return [
            r
            for r in rows
            if r.labels.get(SERVICE_LABEL) == service and ASSIGNMENT_LABEL not in r.labels
        ]  # a cluster node's agent owns the replicas it runs for the scheduler

    async def converge(self, stack: str, service: str) -> bool:
        """One pass; True when the service is gone (record and replicas)."""
        record = await load_service(self.ctx.store, stack, service)
        refusal = "" if record is None else over_ceilings(record, self.ctx.options.ceilings)
        if refusal:
            if (stack, service) not in self._refused:
                self._refused.add((stack, service))
                self.ctx.log.error("service %s_%s refused: %s", stack, service, refusal)
            return False
        self._refused.discard((stack, service))
        if await place_in_cluster(self.ctx, stack, service, record):
            return record is None  # a control plane: the cluster's scheduler places replicas
        rows = await self.rows(stack, service)
        if record is None:
            for row in rows:
                await self.retire(row.id, "service removed")
            return True
        spec = record.spec
        policy = spec.deploy.restart_policy
        condition, _attempts = _restart_policy(record)
        occupied: list[ContainerSummary] = []
        healed = False
        for row in rows:
            if row.state == "running" and row.health != "unhealthy":
                if row.id not in self.replicas:
                    await self.track(row, record)
                occupied.append(row)
                continue
            if row.state == "restarting":  # `carte restart` (or a restart policy): it comes back
                occupied.append(row)
                continue
            if row.state in ("created", "removing", "paused"):
                continue
            code = exit_code_of(row)
            keep = row.state == "running" or condition == "none"
            keep = keep or (condition == "on-failure" and code == 0) or row.id in self.stopped
            if row.state == "running":  # unhealthy: replaced, as Swarm does
                keep = False
            same_revision = revision_of(row) == record.revision
            if not keep and same_revision and self._attempts_spent(record):
                keep = True  # restart_policy.max_attempts reached within its window
            if keep and same_revision:
                occupied.append(row)
            else:
                await self.retire(row.id, f"replica {row.name} {row.status.lower()}")
                if same_revision:
                    self._failures.setdefault((record.stack, record.name), []).append(
                        trio.current_time()
                    )
                    healed = True
        if healed:
            await trio.sleep(normalize.seconds(policy.delay))
        current = [r for r in occupied if revision_of(r) == record.revision]
        old = [r for r in occupied if revision_of(r) != record.revision and r.state == "running"]
        paused = record.rollout is not None and record.rollout.state == "paused"
        if old and not paused:
            await self.roll(record, current, old)
            return False
        missing = record.replicas - len(current) - (len(old) if paused else 0)
        if missing > 0:
            await self.wait_dependencies(record)
            taken = {replica_number(r) for r in occupied}
            numbers = [n for n in range(1, record.replicas + len(taken) + 1) if n not in taken]
            for number in numbers[:missing]:
                await self.create_replica(record, record.spec, record.revision, number)
        elif missing < 0:
            await self.retire_all(
                [row.id for row in sorted(current, key=replica_number)[missing:]], "scaled down"
            )
        rollout = record.rollout
        if not old and rollout is not None and rollout.state in ("progressing", "rolling_back"):
            # nothing of another revision left: done once the desired count runs and is ready
            rows = await self.rows(record.stack, record.name)
            ready = [
                r
                for r in rows
                if r.state == "running"
                and revision_of(r) == record.revision
                and (tracked := self.replicas.get(r.id)) is not None
                and tracked.ready
            ]
            if missing <= 0 and len(ready) >= record.replicas:
                final = "rolled_back" if rollout.state == "rolling_back" else "completed"
                await self.save_rollout(
                    record, msgspec.structs.replace(rollout, state=final, updated=len(ready))
                )
        return False

    def _attempts_spent(self, record: ServiceRecord) -> bool:
        """Whether restart_policy.max_attempts replacements were made within its window
        (0: ever since the daemon started)."""
        policy = record.spec.deploy.restart_policy
        _condition, attempts = _restart_policy(record)
        if attempts <= 0:
            return False
        window = normalize.seconds(policy.window)
        times = self._failures.get((record.stack, record.name), [])
        if window > 0:
            times = [t for t in times if t >= trio.current_time() - window]
        return len(times) >= attempts

    # --- replicas ------------------------------------------------------------------------

    async def create_replica(
        self, record: ServiceRecord, spec: Service, revision: int, number: int
    ) -> Replica:
        config = replica_config(
            stack=record.stack,
            name=record.name,
            service=spec,
            replica=number,
            revision=revision,
            project_dir=record.project_dir,
            env_files=record.env_files,
            files_dir=await self._write_files(record, spec),
            shared_mounts=await shared_mounts(self.ctx, self.rows, record, spec),
            network_names=record.networks,
            volume_names=record.volumes,
            joined=await self._joined(record, "network_mode", spec.network_mode),
            ipc_joined=await self._joined(record, "ipc", spec.ipc),
        )
        created = await create_and_start(self.ctx.bus, config)
        for network, attach in normalize.networks(spec).items():
            full = record.networks.get(network) or network_name(record.stack, network)
            if full != config.network and not spec.network_mode:
                await self.ctx.bus.request(
                    ConnectNetwork(
                        network=full,
                        container=created.id,
                        aliases=replica_aliases(record.name, number, network, attach),
                        ip=attach.ipv4_address,
                    )
                )
        self.ctx.log.info("started replica %s", config.name)
        rows = [r for r in await self.rows(record.stack, record.name) if r.id == created.id]
        if not rows or rows[0].state != "running":
            replica = Replica(created.id, record.stack, record.name, "", [])
            replica.failed.set()
            replica.reason = f"replica {config.name} exited at once"
            return replica
        return await self.track(rows[0], record)

    async def track(self, row: ContainerSummary, record: ServiceRecord) -> Replica:
        """Follow a running replica's readiness (publishing ReplicaReady/NotReady)."""
        existing = self.replicas.get(row.id)
        if existing is not None:
            return existing
        details = await self.ctx.bus.request(InspectContainer(ref=row.id))
        wanted = network_name(record.stack, "default")
        ips = {e.network: e.ip_address for e in details.endpoints}
        ip = ips.get(wanted) or next(iter(ips.values()), "")
        spec = record.revision_spec(revision_of(row)) or record.spec
        replica = Replica(row.id, record.stack, record.name, ip, normalize.container_ports(spec))
        self.replicas[row.id] = replica
        probe = spec.x_carte.readiness
        check = details.config.healthcheck
        if probe is not None:
            self.nursery.start_soon(self._probe, replica, probe)
        elif check is not None and check.test and check.test[0] != "NONE":
            health = details.state.health
            if health is not None and health.status == "healthy":
                await self.set_ready(replica, True, "")
        else:
            await self.set_ready(replica, True, "")
        return replica

    async def _probe(self, replica: Replica, probe: object) -> None:
        from carte.stack.model import Readiness

        assert isinstance(probe, Readiness)

        async def run_exec(cmd: list[str], limit: float) -> bool:
            request = ExecInContainer(ref=replica.container_id, cmd=cmd, timeout=limit)
            try:
                result = await self.ctx.bus.request(request)
            except CarteError:
                return False
            return result.exit_code == 0 and not result.timed_out

        async def report(ready: bool, reason: str) -> None:
            await self.set_ready(replica, ready, reason)

        with replica.probe_scope:
            await watch_readiness(probe, replica.ip, run_exec, report)

    async def set_ready(self, replica: Replica, ready: bool, reason: str) -> None:
        if self.replicas.get(replica.container_id) is not replica:
            return
        was = replica.ready
        replica.ready = ready
        if ready and not was:
            replica.ready_once.set()
            self.kick(replica.stack, replica.service)
            await self.ctx.bus.publish(
                ReplicaReady(
                    id=replica.container_id,
                    stack=replica.stack,
                    service=replica.service,
                    container_id=replica.container_id,
                    ip=replica.ip,
                    ports=replica.ports,
                )
            )
        elif not ready:
            replica.reason = reason
            if was:
                replica.lost.set()
            else:
                replica.failed.set()
            if was:
                await self._publish_not_ready(replica, reason)

    async def _publish_not_ready(self, replica: Replica, reason: str) -> None:
        await self.ctx.bus.publish(
            ReplicaNotReady(
                id=replica.container_id,
                stack=replica.stack,
                service=replica.service,
                container_id=replica.container_id,
                ip=replica.ip,
                reason=reason,
            )
        )

    async def untrack(self, container_id: str, reason: str) -> bool:
        """Forget a replica; ReplicaNotReady first when it was ready (then True)."""
        replica = self.replicas.pop(container_id, None)
        if replica is None:
            return False
        replica.probe_scope.cancel()
        replica.reason = reason
        was_ready = replica.ready
        if was_ready:
            replica.ready = False
            await self._publish_not_ready(replica, reason)
        replica.lost.set()
        replica.failed.set()
        return was_ready

    async def retire(self, container_id: str, reason: str) -> None:
        """Take a replica out of service (NotReady first, then wait for the load balancer to
        drop it), stop and remove it."""
        if await self.untrack(container_id, reason):
            await self._drain(container_id)
        try:
            await self.ctx.bus.request(StopContainer(ref=container_id))
        except (NotFound, Conflict):
            pass
        await remove_if_present(self.ctx.bus, container_id)

    async def _drain(self, container_id: str) -> None:
        with trio.move_on_after(_DRAIN_MAX) as scope:
            try:
                await self.ctx.bus.request(DrainReplica(container_id=container_id))
            except CarteError as error:  # no services handler: no balancing to wait for
                self.ctx.log.debug("drain of %s: %s", container_id[:12], error.message)
        if scope.cancelled_caught:
            self.ctx.log.warning(
                "replica %s still balanced to after %.0f s; stopping it anyway",
                container_id[:12],
                _DRAIN_MAX,
            )
        await trio.sleep(_DRAIN)

    async def retire_all(self, container_ids: list[str], reason: str) -> None:
        """`retire` several replicas side by side: each waits out its own stop signal and
        grace period, so a batch takes one grace period, not one per replica. Every stop is
        tried; the first `CarteError` is raised after all of them ended."""
        errors: list[CarteError] = []

        async def retire_one(container_id: str) -> None:
            try:
                await self.retire(container_id, reason)
            except CarteError as error:
                errors.append(error)

        async with trio.open_nursery() as nursery:
            for container_id in container_ids:
                nursery.start_soon(retire_one, container_id)
        if errors:
            raise errors[0]

    async def _joined(self, record: ServiceRecord, field: str, mode: str) -> str:
        """The running replica that `FIELD: service:NAME` (network_mode, ipc) joins; "" for
        any other mode."""
        kind, _, other = mode.partition(":")
        if kind != "service":
            return ""
        for row in await self.rows(record.stack, other):
            if row.state == "running":
                return row.id
        raise Conflict(
            f"service {record.name}: {field} service:{other} needs a running replica "
            f"of {other}; waiting for one"
        )

    async def _write_files(self, record: ServiceRecord, spec: Service) -> str:
        """The directory holding the service's secrets and configs, written from the record
        (under the run root, so never on disk after a reboot); "" when it uses none."""
        if not file_refs(spec):
            return ""
        directory = self.ctx.run_root / "stacks" / record.stack / record.name
        await trio.to_thread.run_sync(write_files, directory, spec, record.files)
        return str(directory)

    # --- depends_on ----------------------------------------------------------------------

    async def wait_dependencies(self, record: ServiceRecord) -> None:
        """Wait (bounded, 120 s) until each depends_on condition holds; then go on anyway
        with a warning, as a stuck dependency must not block the stack forever."""
        for other, dependency in normalize.dependencies(record.spec).items():
            with trio.move_on_after(120) as scope:
                while True:
                    if await self._holds(record.stack, other, dependency.condition):
                        break
                    await trio.sleep(0.2)  # a condition spans several handlers' state
            if scope.cancelled_caught:
                self.ctx.log.warning(
                    "service %s_%s: %s not %s after 120 s; starting anyway",
                    record.stack,
                    record.name,
                    other,
                    dependency.condition,
                )

    async def _holds(self, stack: str, service: str, condition: str) -> bool:
        dependency = await load_service(self.ctx.store, stack, service)
        if dependency is None or dependency.replicas == 0:
            return True
        rows = await self.rows(stack, service)
        if condition == "service_started":
            return any(r.state == "running" for r in rows)
        if condition == "service_healthy":
            return any(
                self.replicas.get(r.id) is not None and self.replicas[r.id].ready for r in rows
            )
        return bool(rows) and all(r.state == "exited" and exit_code_of(r) == 0 for r in rows)

    # --- rolling updates -----------------------------------------------------------------

    async def save_rollout(
        self, record: ServiceRecord, rollout: Rollout, *, spec: Service | None = None
    ) -> None:
        """Store `rollout` (and, for a rollback, `spec` at `rollout.revision`) into the
        service's current record, under the lock every writer of these records takes. Nothing
        is written when the record is gone or an apply moved it to another revision since
        `record` was read (that newer change owns the rollout now)."""
        async with self.lock:
            fresh = await load_service(self.ctx.store, record.stack, record.name)
            if fresh is None or fresh.revision != record.revision:
                return
            fresh.rollout = rollout
            if spec is not None:
                fresh.spec, fresh.revision = spec, rollout.revision
            await self.ctx.store.put(service_key(record.stack, record.name), fresh)
        record.rollout = rollout
        await self.ctx.bus.publish(
            RolloutChanged(id=f"{record.stack}_{record.name}", rollout=rollout)
        )
        if spec is not None:
            await self.ctx.bus.publish(service_updated(fresh))

    async def roll(
        self, record: ServiceRecord, current: list[ContainerSummary], old: list[ContainerSummary]
    ) -> None:
        """Replace `old` replicas by ones of the record's revision per update_config (or
        rollback_config while rolling back). On failure: roll back, pause, or continue."""
        rollout = record.rollout or Rollout(
            stack=record.stack, service=record.name, revision=record.revision
        )
        rolling_back = rollout.state == "rolling_back"
        config: UpdateConfig = (
            record.spec.deploy.rollback_config if rolling_back else record.spec.deploy.update_config
        )
        if record.spec.container_name:  # one name: the old replica must go first
            config = msgspec.structs.replace(config, order="stop-first")
        total = max(record.replicas, 1)
        rollout = msgspec.structs.replace(
            rollout,
            revision=record.revision,
            state="rolling_back" if rolling_back else "progressing",
            total=record.replicas,
            updated=len(current),
            message="",
        )
        await self.save_rollout(record, rollout)
        batch_size = config.parallelism or len(old)
        failures = 0
        old = sorted(old, key=replica_number)
        while old:
            batch, old = old[:batch_size], old[batch_size:]
            room = max(record.replicas - len(current), 0)
            numbers = [replica_number(r) for r in batch][:room]
            try:
                replaced = [row.id for row in batch]
                if config.order == "start-first":
                    await self._start_batch(record, numbers, config, current)
                    await self.retire_all(replaced, "replaced by a new revision")
                else:
                    await self.retire_all(replaced, "replaced by a new revision")
                    await self._start_batch(record, numbers, config, current)
            except RolloutFailed as error:
                failures += len(batch)
                if (
                    failures / total <= config.max_failure_ratio
                    or config.failure_action == "continue"
                ):
                    continue
                await self.fail(record, rollout, str(error), config, rolling_back)
                return
            rollout = msgspec.structs.replace(rollout, updated=len(current))
            await self.save_rollout(record, rollout)
            if old:
                await trio.sleep(normalize.seconds(config.delay))
        # completed (or rolled_back) is written by `converge` once the desired count of this
        # revision runs and is ready: a batch cut short by `room` or a failure let through by
        # max_failure_ratio leaves replicas still to create
        self.kick(record.stack, record.name)

    async def _start_batch(
        self,
        record: ServiceRecord,
        numbers: list[int],
        config: UpdateConfig,
        current: list[ContainerSummary],
    ) -> None:
        """Start replicas `numbers` of the record's revision; each must become ready and stay
        ready (and running) for the monitor window, else `RolloutFailed` (new ones removed)."""
        started: list[Replica] = []
        since: dict[str, float] = {}
        monitor = normalize.seconds(config.monitor)
        deadline = readiness_deadline(record.spec, monitor)
        try:
            for number in numbers:
                replica = await self.create_replica(record, record.spec, record.revision, number)
                started.append(replica)
                since[replica.container_id] = trio.current_time()
            for replica in started:
                left = since[replica.container_id] + deadline - trio.current_time()
                await _wait_ready(replica, left, deadline)
            with trio.move_on_after(monitor):
                async with trio.open_nursery() as watch:
                    for replica in started:
                        watch.start_soon(_raise_on_loss, replica)
        except (RolloutFailed, CarteError) as error:
            for replica in started:
                await self.retire(replica.container_id, "failed its update")
            raise RolloutFailed(
                str(error) if not isinstance(error, CarteError) else error.message
            ) from None
        rows = {r.id: r for r in await self.rows(record.stack, record.name)}
        current.extend(rows[r.container_id] for r in started if r.container_id in rows)

    async def fail(
        self,
        record: ServiceRecord,
        rollout: Rollout,
        reason: str,
        config: UpdateConfig,
        rolling_back: bool,
    ) -> None:
        """A rollout failed (here, or in the cluster's scheduler): roll back to the previous
        revision, else pause (failed, when a rollback fails)."""
        action = config.failure_action
        previous = record.revision_spec(rollout.from_revision)
        if action == "rollback" and not rolling_back and previous is not None:
            self.ctx.log.warning(
                "update of %s_%s failed (%s); rolling back to revision %d",
                record.stack,
                record.name,
                reason,
                rollout.from_revision,
            )
            await self.save_rollout(
                record,
                msgspec.structs.replace(
                    rollout,
                    state="rolling_back",
                    revision=rollout.from_revision,
                    from_revision=rollout.revision,
                    message=f"update to revision {rollout.revision} failed: {reason}",
                ),
                spec=previous,
            )
            return
        state = "failed" if rolling_back else "paused"
        await self.save_rollout(
            record,
            msgspec.structs.replace(rollout, state=state, message=f"update failed: {reason}"),
        )


def _restart_policy(record: ServiceRecord) -> tuple[str, int]:
    """When to replace an exited replica: Compose's `restart` if the file gave one (records
    stored before Carte read it kept "no" as a default: deploy.restart_policy decides)."""
    if record.compose_restart:
        return normalize.restart_policy(record.spec)
    policy = record.spec.deploy.restart_policy
    return policy.condition, policy.max_attempts


def readiness_deadline(spec: Service, monitor: float) -> float:
    """Seconds a new replica of a rolling update has, from its start, to become ready: the
    longest of its probe's own budget (x-carte.readiness: initialDelaySeconds + (success +
    failure thresholds) x (period + timeout); or the healthcheck's start_period + (retries
    + 1) x interval), `update_config.monitor`, and `READY_FLOOR` for a loaded machine."""
    probe = spec.x_carte.readiness
    budget = _NO_PROBE_GRACE
    if probe is not None:
        rounds = probe.successThreshold + probe.failureThreshold
        budget = probe.initialDelaySeconds + rounds * (probe.periodSeconds + probe.timeoutSeconds)
    elif spec.healthcheck is not None and not spec.healthcheck.disable:
        check = spec.healthcheck
        interval = normalize.seconds(check.interval)
        budget = normalize.seconds(check.start_period) + interval * (check.retries + 1) + 5
    return max(budget, monitor, READY_FLOOR)


async def _wait_ready(replica: Replica, left: float, deadline: float) -> None:
    with trio.move_on_after(max(left, 0.0)):
        async with trio.open_nursery() as race:

            async def ready() -> None:
                await replica.ready_once.wait()
                race.cancel_scope.cancel()

            async def failed() -> None:
                await replica.failed.wait()
                race.cancel_scope.cancel()

            race.start_soon(ready)
            race.start_soon(failed)
    if not replica.ready:
        why = replica.reason or (
            f"not ready within {math.ceil(deadline)} s of its start (give it longer with "
            "deploy.update_config.monitor)"
        )
        raise RolloutFailed(why)


async def _raise_on_loss(replica: Replica) -> None:
    await replica.lost.wait()
    raise RolloutFailed(replica.reason or "a new replica stopped being ready")


def autoscale_spec(spec: Service) -> AutoscaleSpec | None:
    scale = spec.x_carte.autoscale
    if scale is None:
        return None
    return AutoscaleSpec(
        min=scale.min,
        max=scale.max,
        target_cpu_percent=scale.target_cpu_percent,
        target_memory_percent=scale.target_memory_percent,
        scale_down_stabilization=normalize.seconds(scale.scale_down_stabilization),
    )


def service_updated(record: ServiceRecord) -> ServiceUpdated:
    """The fact telling the services and autoscaler handlers a service's desired state."""
    spec = record.spec
    return ServiceUpdated(
        id=f"{record.stack}_{record.name}",
        stack=record.stack,
        service=record.name,
        revision=record.revision,
        replicas=record.replicas,
        image=image_name(record.stack, record.name, spec),
        network=network_name(record.stack, "default"),
        networks=[
            record.networks.get(n) or network_name(record.stack, n)
            for n in normalize.networks(spec)
        ],
        ports=published_ports(record),
        container_ports=normalize.container_ports(spec),
        resources=resources(spec),
        autoscale=autoscale_spec(spec),
    )


def published_ports(record: ServiceRecord) -> list[PortSpec]:
    """The service's host ports: those it names, and those picked for ports it lists
    without a host side (`random_ports`)."""
    picked = [
        msgspec.structs.replace(port, host_port=record.random_ports[key])
        for port in normalize.unpublished_ports(record.spec)
        if (key := f"{port.container_port}/{port.protocol}") in record.random_ports
    ]
    return [*normalize.ports(record.spec), *picked]


def live_changes(old: Service, new: Service) -> str:
    """What an apply changes in place for a service whose replicas stay ("" for nothing):
    its autoscale bounds and targets, update and rollback settings."""
    changed = [
        key
        for key, before, after in (
            ("x-carte.autoscale", old.x_carte.autoscale, new.x_carte.autoscale),
            ("deploy.update_config", old.deploy.update_config, new.deploy.update_config),
            ("deploy.rollback_config", old.deploy.rollback_config, new.deploy.rollback_config),
        )
        if msgspec.json.encode(before) != msgspec.json.encode(after)
    ]
    return f"new {', '.join(changed)}" if changed else ""


def over_ceilings(record: ServiceRecord, ceilings: Ceilings) -> str:
    """Why a stored record cannot be converged ("" when it can): counts over the ceilings
    (written by a daemon that had none, or by hand); the fix is an apply or a scale."""
    scale = record.spec.x_carte.autoscale
    counts = [record.replicas]  # the live count: the file's is kept only for the plan
    counts += [scale.min, scale.max] if scale is not None else []
    if max(counts) > ceilings.replicas:
        return (
            f"it asks for {max(counts)} replicas, above the ceiling of {ceilings.replicas} "
            "(stacks.max_replicas in carte.yaml); apply a corrected file or run carte service "
            f"scale {record.stack}_{record.name}=N"
        )
    try:
        ports = port_count(record.spec)
    except ValueError as error:
        return f"its ports cannot be read: {error}; apply a corrected file"
    if ports > ceilings.ports:
        return (
            f"it has {ports} ports, above the ceiling of {ceilings.ports} "
            "(stacks.max_ports in carte.yaml); apply a corrected file"
        )
    return ""
