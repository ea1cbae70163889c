"""The autoscaler handler: every `autoscaler.sync_period` seconds, each service with
`x-carte.autoscale` is measured and scaled by Kubernetes' rule (`autoscale_rule`).

CPU utilization of a replica is its cgroup CPU time since the previous evaluation divided by
(elapsed time x its CPU limit, or 1 CPU without one); memory is usage over its limit. Both
are averaged over the service's ready replicas that have a sample; ready replicas without
one yet and replicas not ready are counted as the HPA counts them (`autoscale_rule`). Every
evaluation is published as an `AutoscaleDecision` with its inputs; a changed count is sent
as `ScaleService` to the stacks handler. A replica whose stats cannot be read counts as one
without a sample in that evaluation; on a control plane, a replica another node runs (its
container is not on this machine) is taken at the average of the ones measured here
(`autoscale_rule.measure`), and the reason says so; a service with nothing measurable keeps
its count. A
failed `ScaleService` is logged and tried again at the next period. Cancellation stops the
loop between evaluations or mid-request.
"""

from __future__ import annotations

import msgspec
import trio

from carte.api.errors import CarteError, NotFound
from carte.api.events import (
    AutoscaleDecision,
    GetContainerStats,
    InspectService,
    ListReplicas,
    ListServices,
    ScaleService,
    ServiceRemoved,
    ServiceUpdated,
    StackRemoved,
)
from carte.engine import Handler, HandlerContext, on
from carte.handlers.services._autoscale_rule import Stabilizer, measure, recommend
from carte.handlers.services._options import AutoscalerOptions
from carte.stack import resources
from carte.stack.model import Service


class AutoscalerHandler(Handler):
    """Horizontal autoscaling of stack services on CPU and memory."""

    name = "autoscaler"
    requires = ("stacks", "container-tools")
    Options = AutoscalerOptions
    section = "autoscaler"

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self._services: dict[str, ServiceUpdated] = {}
        self._stabilizers: dict[str, Stabilizer] = {}
        self._cpu_seen: dict[str, tuple[float, int]] = {}
        """container id -> (time, cgroup CPU ns) at the previous evaluation."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Evaluate every autoscaled service each period until cancelled. Each period first
        asks the stacks handler which services autoscale (`_resync`), so a restarted handler
        (which gets no backlog of facts) or a missed fact never stops the loop; a failing
        evaluation of one service is logged and the others go on."""
        task_status.started()
        while True:
            await trio.sleep(self.ctx.options.sync_period)
            try:
                await self._resync()
            except CarteError as error:
                self.ctx.log.warning("autoscaler: services not listed: %s", error.message)
            for key, service in list(self._services.items()):
                try:
                    await self._evaluate(key, service)
                except CarteError as error:
                    self.ctx.log.warning("autoscaling %s: %s", key, error.message)

    async def _resync(self) -> None:
        """Adopt the autoscaled services no `ServiceUpdated` told of, with their stored spec
        (`InspectService`), and take each one's desired count from the stacks handler."""
        listed = await self.ctx.bus.request(ListServices())
        for summary in listed:
            key = f"{summary.stack}_{summary.name}"
            known = self._services.get(key)
            if summary.autoscale is None:
                continue
            if known is None:
                details = await self.ctx.bus.request(
                    InspectService(stack=summary.stack, service=summary.name)
                )
                try:
                    spec = msgspec.convert(details.spec, Service)
                except msgspec.ValidationError as error:
                    self.ctx.log.warning("autoscaling %s: stored spec unreadable: %s", key, error)
                    continue
                known = ServiceUpdated(
                    id=key,
                    stack=summary.stack,
                    service=summary.name,
                    revision=summary.revision,
                    replicas=summary.desired,
                    image=summary.image,
                    network="",  # not used here: the services handler owns addresses
                    resources=resources(spec),
                    autoscale=summary.autoscale,
                )
                self.ctx.log.info("autoscaling %s: adopted from the stacks handler", key)
                await self.service_updated(known)
            elif known.replicas != summary.desired:
                self._services[key] = msgspec.structs.replace(known, replicas=summary.desired)

    @on(ServiceUpdated)
    async def service_updated(self, fact: ServiceUpdated) -> None:
        key = f"{fact.stack}_{fact.service}"
        if fact.autoscale is None:
            self._services.pop(key, None)
            self._stabilizers.pop(key, None)
            return
        self._services[key] = fact
        window = fact.autoscale.scale_down_stabilization
        stabilizer = self._stabilizers.get(key)
        if stabilizer is None or stabilizer.window != window:
            self._stabilizers[key] = Stabilizer(window=window)

    @on(ServiceRemoved)
    async def service_removed(self, fact: ServiceRemoved) -> None:
        key = f"{fact.stack}_{fact.service}"
        self._services.pop(key, None)
        self._stabilizers.pop(key, None)

    @on(StackRemoved)
    async def stack_removed(self, fact: StackRemoved) -> None:
        for key in [k for k, s in self._services.items() if s.stack == fact.stack]:
            self._services.pop(key, None)
            self._stabilizers.pop(key, None)

    async def _evaluate(self, key: str, service: ServiceUpdated) -> None:
        spec = service.autoscale
        stabilizer = self._stabilizers.get(key)
        if spec is None or stabilizer is None:
            return  # removed while another service was evaluated
        rows = await self.ctx.bus.request(
            ListReplicas(stack=service.stack, service=service.service)
        )
        running = [r for r in rows if r.status.startswith("Up")]
        current = service.replicas
        cpu_limit = service.resources.nano_cpus / 1e9 or 1.0
        cpu: list[float] = []
        memory: list[float] = []
        unready = sum(1 for r in rows if not r.ready and not r.status.startswith("Exited"))
        ready = elsewhere = 0
        now = trio.current_time()
        for row in running:
            if not row.ready:
                continue
            try:
                stats = await self.ctx.bus.request(GetContainerStats(ref=row.container_id))
            except CarteError as error:
                if isinstance(error, NotFound) and row.node:
                    elsewhere += 1  # another node of the cluster runs it: not readable here
                else:
                    ready += 1  # missing: no sample this time
                continue
            ready += 1
            before = self._cpu_seen.get(row.container_id)
            self._cpu_seen[row.container_id] = (now, stats.cpu_usage_ns)
            if before is not None and now > before[0]:
                used = max(0, stats.cpu_usage_ns - before[1]) / 1e9
                cpu.append(used / ((now - before[0]) * cpu_limit) * 100.0)
            limit = service.resources.memory or stats.memory_limit
            if limit:
                memory.append(stats.memory_usage / limit * 100.0)
        alive = {r.container_id for r in rows}
        for gone in [c for c in self._cpu_seen if c not in alive]:
            del self._cpu_seen[gone]
        cpu_metric = measure(cpu, spec.target_cpu_percent, ready, elsewhere, unready)
        memory_metric = measure(memory, spec.target_memory_percent, ready, elsewhere, unready)
        metrics = [m for m in (cpu_metric, memory_metric) if m is not None]
        cpu_percent = sum(cpu) / len(cpu) if cpu else None
        memory_percent = sum(memory) / len(memory) if memory else None
        tolerance = self.ctx.options.tolerance
        recommended = recommend(current, metrics, tolerance) if metrics else current
        desired = stabilizer.decide(now, current, recommended, spec.min, spec.max)
        reason = _reason(current, desired, recommended, bool(metrics))
        if elsewhere:
            reason += f"; {_elsewhere(elsewhere, max(len(cpu), len(memory)))}"
        await self.ctx.bus.publish(
            AutoscaleDecision(
                id=key,
                stack=service.stack,
                service=service.service,
                current=current,
                desired=desired,
                recommended=recommended,
                cpu_percent=None if cpu_percent is None else round(cpu_percent, 2),
                target_cpu_percent=spec.target_cpu_percent,
                memory_percent=None if memory_percent is None else round(memory_percent, 2),
                target_memory_percent=spec.target_memory_percent,
                reason=reason,
            )
        )
        if desired != current:
            self.ctx.log.info(
                "autoscaling %s from %d to %d replicas: %s", key, current, desired, reason
            )
            await self.ctx.bus.request(
                ScaleService(stack=service.stack, service=service.service, replicas=desired)
            )


def _reason(current: int, desired: int, recommended: int, measured: bool) -> str:
    if not measured:
        return "no ready replica measured yet"
    if desired > current:
        return "above target"
    if desired < current:
        return "below target for the whole stabilization window"
    if recommended < current:
        return "below target, waiting out the stabilization window"
    if recommended > current:
        return "above target, at the maximum"
    return "within tolerance of the target"


def _elsewhere(elsewhere: int, measured: int) -> str:
    replicas = f"{elsewhere} replica{'s' if elsewhere != 1 else ''} on other nodes"
    if not measured:
        return f"{replicas}, whose stats this machine cannot read"
    return f"{replicas} taken at the average of the {measured} measured here"
