"""The services handler: a stable virtual IP per service, balanced by the kernel to ready replicas.

On `ServiceUpdated` a service gets a VIP on its stack's default network (taken from the top
of the subnet, where the network's allocator, which counts up, comes last; kept in the store
so it survives restarts), added as a /32 on the bridge and named by DNS (`SERVICE` and
`SERVICE.STACK`, through the network handler's `SetServiceAddress`). `ReplicaReady` adds a
replica to the service's set and `ReplicaNotReady` removes it; every change rebuilds this
daemon's load-balancing table in one nft transaction (`carte.net.lb`), so a replica leaves
the set the moment it stops being ready while conntrack keeps existing flows where they are.

A failing nft or ip call is logged and retried with the next change; it never takes the
handler down. A restarted handler rebuilds from the store and the stacks handler's replicas.
The ready set is kept in the store too: after a daemon restart (even a SIGKILL) the replicas
that were ready and still run stay balanced to until their readiness is probed again
(`_PROVISIONAL` s at most), instead of every VIP refusing connections meanwhile.

Names keep resolving while the daemon (and its DNS) is down: every ready replica's /etc/hosts
ends with the VIPs of its stack's services (as Docker writes its containers' hosts files),
rewritten when a VIP changes or the replica turns ready.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import msgspec
import trio

from carte.api.errors import CarteError, Conflict
from carte.api.events import (
    ContainerExited,
    ContainerRemoved,
    DrainReplica,
    Fact,
    GetServiceAddress,
    InspectNetwork,
    ListReplicas,
    ReplicaNotReady,
    ReplicaReady,
    ServiceAddressAssigned,
    ServiceRemoved,
    ServiceUpdated,
    SetServiceAddress,
    StackRemoved,
)
from carte.engine import Handler, HandlerContext, on
from carte.handlers.network import nft_table_name
from carte.handlers.services._records import PREFIX, ServiceVip, service_key
from carte.net import conntrack, lb

# How long replicas the store says were ready are balanced to after a restart, unless their
# readiness is confirmed (a ReplicaReady) first.
_PROVISIONAL = 20.0
_HOSTS_MARK = "# carte services\n"


class ServicesHandler(Handler):
    """Service VIPs, their DNS names and the kernel's load balancing to ready replicas."""

    name = "services"
    requires = ("network", "stacks")
    catch_up = False  # run() rebuilds VIPs and ready sets from the store and ListReplicas

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self._table = f"{nft_table_name(ctx.root)}-lb"
        self._vips: dict[str, ServiceVip] = {}
        self._ready: dict[str, dict[str, IPv4Address]] = {}
        """Ready replicas per service key: container id -> address."""
        self._provisional: set[str] = set()
        self._left: dict[str, tuple[str, IPv4Address]] = {}
        """Replicas that stopped being ready (container id -> bridge, address), until they end."""
        """Replicas balanced to from the store's ready set, not confirmed ready since start."""
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)
        self._nursery: trio.Nursery | None = None
        """Forgetting flows runs here, beside the facts (a dump can take a second or two)."""
        self._flows_limiter = trio.CapacityLimiter(1)
        self._balanced: set[str] = set()
        """Container ids the applied table balances to."""
        self._applied = trio.Event()
        """Set (and replaced) each time a table is applied."""
        self._early: list[Fact] | None = []
        """Facts delivered while run() loads the VIPs and ready sets, handled in order after
        it (None once loaded): a ReplicaReady handled against a half-loaded state would apply
        a table without the other services, or none at all, and cut their traffic."""
        self._replaying: Fact | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rebuild VIPs and ready sets from the store and the stacks handler, then idle.

        On cancellation (daemon stop) the table and VIP addresses stay, so traffic keeps
        flowing to replicas that keep running; the next start rebuilds them."""
        for entry in await self.ctx.store.list(PREFIX):
            record = entry.decode(ServiceVip)
            self._vips[record.key] = record
        alive: set[str] | None = None
        try:
            rows = await self.ctx.bus.request(ListReplicas())
            alive = {r.container_id for r in rows if r.status.lower().startswith("up")}
            for row in rows:
                if row.ready and row.ip and not row.node:  # a cluster row: not this daemon's
                    key = f"{row.stack}_{row.service}"
                    self._ready.setdefault(key, {})[row.container_id] = IPv4Address(row.ip)
        except CarteError as error:
            self.ctx.log.info("services: replicas not known yet: %s", error.message)
        for key, record in self._vips.items():
            ready = self._ready.setdefault(key, {})
            for container_id, ip in record.ready.items():
                if container_id not in ready and (alive is None or container_id in alive):
                    ready[container_id] = IPv4Address(ip)
                    self._provisional.add(container_id)
        for record in self._vips.values():
            await self._apply_vip(record, assigned=True)
            await self._hairpin(record)
        if self._vips:  # with no service there is no table to rebuild: no nft call at start
            await self._rebuild(list(self._vips))
        for stack in {r.stack for r in self._vips.values()}:
            await self._write_hosts(stack)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._replay_early()
            task_status.started()
            if self._provisional:
                await self._expire_provisional()
            await trio.sleep_forever()

    def _held(self, fact: Fact) -> bool:
        """True when `fact` arrived before run() loaded the state: it is kept for later."""
        if self._early is None or fact is self._replaying:
            return False
        self._early.append(fact)
        return True

    async def _replay_early(self) -> None:
        """Handle the facts kept while loading, in order (more may arrive meanwhile)."""
        while self._early:
            fact = self._replaying = self._early.pop(0)
            for fact_type, methods in self.facts.items():
                if isinstance(fact, fact_type):
                    for method in methods:
                        await getattr(self, method)(fact)
        self._replaying = None
        self._early = None

    async def _expire_provisional(self) -> None:
        """Stop balancing to replicas not confirmed ready within `_PROVISIONAL` s of start."""
        await trio.sleep(_PROVISIONAL)
        stale = set(self._provisional)
        self._provisional.clear()
        changed = [
            key
            for key, ready in self._ready.items()
            if any(ready.pop(c, None) is not None for c in list(ready) if c in stale)
        ]
        if changed:
            self.ctx.log.info("services: %d replicas not ready again after a restart", len(stale))
            await self._rebuild(changed)

    # --- facts from the stacks handler -------------------------------------------------------

    @on(ServiceUpdated)
    async def service_updated(self, fact: ServiceUpdated) -> None:
        if self._held(fact):
            return
        key = f"{fact.stack}_{fact.service}"
        ports = [
            lb.ServicePort(port=p, target_port=p) for p in sorted(set(fact.container_ports))
        ] + [
            lb.ServicePort(
                port=p.host_port,
                target_port=p.container_port,
                proto=p.protocol,
                published=True,
                host_ip=p.host_ip if p.host_ip not in ("0.0.0.0", "::") else "",
            )
            for p in fact.ports
            if p.host_port
        ]
        async with self._lock:
            record = self._vips.get(key)
            moved = record is None or record.network != fact.network
            if record is None or record.network != fact.network:
                if record is not None:
                    await self._apply_vip(record, assigned=False)
                try:
                    record = await self._allocate(fact.stack, fact.service, fact.network)
                except CarteError as error:
                    self.ctx.log.error("no VIP for %s: %s", key, error.message)
                    return
            record = msgspec.structs.replace(record, ports=ports)
            await self.ctx.store.put(service_key(key), record)
            self._vips[key] = record
        await self._apply_vip(record, assigned=True)
        await self._rebuild([key])
        if moved:
            await self._write_hosts(fact.stack)

    @on(ReplicaReady)
    async def replica_ready(self, fact: ReplicaReady) -> None:
        if self._held(fact):
            return
        if not fact.ip:
            return
        key = f"{fact.stack}_{fact.service}"
        record = self._vips.get(key)
        if record is not None:
            await self._hairpin(record)
        self._provisional.discard(fact.container_id)
        self._ready.setdefault(key, {})[fact.container_id] = IPv4Address(fact.ip)
        await self._rebuild([key])
        await self._write_hosts(fact.stack, [fact.container_id])

    @on(ReplicaNotReady)
    async def replica_not_ready(self, fact: ReplicaNotReady) -> None:
        if self._held(fact):
            return
        key = f"{fact.stack}_{fact.service}"
        address = self._ready.get(key, {}).pop(fact.container_id, None)
        if address is not None:
            await self._rebuild([key])
            record = self._vips.get(key)
            if record is not None:  # its flows stay while it drains; forgotten when it ends
                self._left[fact.container_id] = (record.bridge, address)

    @on(DrainReplica)
    async def drain_replica(self, command: DrainReplica) -> None:
        """Wait until the applied table balances to the replica nowhere: once its
        ReplicaNotReady (published before this request) has been applied. The caller bounds
        the wait."""
        while command.container_id in self._balanced or any(
            command.container_id in ready for ready in self._ready.values()
        ):
            await self._applied.wait()

    @on(GetServiceAddress)
    async def service_address(self, command: GetServiceAddress) -> str:
        record = self._vips.get(f"{command.stack}_{command.service}")
        return record.vip if record is not None else ""

    @on(ContainerExited)
    @on(ContainerRemoved)
    async def replica_ended(self, fact: ContainerExited | ContainerRemoved) -> None:
        """A replica that ended (killed, say) leaves its services at once, before the stacks
        handler's ReplicaNotReady, and every flow to it is forgotten, open ones too."""
        if self._held(fact):
            return
        changed = [k for k, ready in self._ready.items() if fact.id in ready]
        left = self._left.pop(fact.id, None)
        for key in changed:
            address = self._ready[key].pop(fact.id)
            record = self._vips.get(key)
            if record is not None:
                left = (record.bridge, address)
        if changed:
            await self._rebuild(changed)
        if left is not None:
            self._forget_flows(*left)

    def _forget_flows(self, bridge: str, address: IPv4Address) -> None:
        """Forget, in the background, the conntrack entries of flows to a backend that ended
        (see conntrack.py) and its neighbour entry."""
        if self._nursery is not None:
            self._nursery.start_soon(self._forget_flows_now, bridge, address)

    async def _forget_flows_now(self, bridge: str, address: IPv4Address) -> None:

        def forget() -> int:
            count = conntrack.forget_backend(address)
            lb.forget_neighbour(bridge, address)
            return count

        try:
            count = await trio.to_thread.run_sync(forget, limiter=self._flows_limiter)
        except CarteError as error:
            self.ctx.log.warning("flows to %s not forgotten: %s", address, error.message)
            return
        if count:
            self.ctx.log.info("forgot %d flows to %s", count, address)

    @on(ServiceRemoved)
    async def service_removed(self, fact: ServiceRemoved) -> None:
        if self._held(fact):
            return
        await self._forget([f"{fact.stack}_{fact.service}"])

    @on(StackRemoved)
    async def stack_removed(self, fact: StackRemoved) -> None:
        if self._held(fact):
            return
        await self._forget([k for k, r in self._vips.items() if r.stack == fact.stack])

    # --- VIPs -------------------------------------------------------------------------------

    async def _allocate(self, stack: str, service: str, network_name: str) -> ServiceVip:
        """A free address from the top of the network's subnet; `Conflict` when none is left."""
        network = await self.ctx.bus.request(InspectNetwork(name=network_name))
        subnet = IPv4Network(network.subnet)
        taken = {IPv4Address(m.ip_address) for m in network.containers if m.ip_address}
        taken |= {r.vip_address for r in self._vips.values() if r.network == network_name}
        taken.add(IPv4Address(network.gateway))
        candidate = int(subnet.broadcast_address) - 1
        while candidate > int(subnet.network_address):
            address = IPv4Address(candidate)
            if address not in taken:
                return ServiceVip(
                    stack=stack,
                    service=service,
                    network=network_name,
                    bridge=network.bridge,
                    vip=str(address),
                )
            candidate -= 1
        raise Conflict(f"network {network_name} has no address left for the VIP of {service}")

    async def _apply_vip(self, record: ServiceVip, *, assigned: bool) -> None:
        """Put the VIP on its bridge and its names in DNS (`assigned`), or take both away;
        a failure of either is logged, not raised."""
        change = lb.assign_vip if assigned else lb.release_vip
        try:
            await trio.to_thread.run_sync(
                change, record.bridge, record.vip_address, limiter=self._limiter
            )
        except CarteError as error:
            self.ctx.log.warning("VIP %s of %s: %s", record.vip, record.key, error.message)
        await self._name(record, record.vip if assigned else "")

    async def _hairpin(self, record: ServiceVip) -> None:
        try:
            await trio.to_thread.run_sync(lb.enable_hairpin, record.bridge, limiter=self._limiter)
        except CarteError as error:
            self.ctx.log.warning("hairpin on %s: %s", record.bridge, error.message)

    async def _name(self, record: ServiceVip, ip: str) -> None:
        names = [record.service, f"{record.service}.{record.stack}"]
        try:
            await self.ctx.bus.request(
                SetServiceAddress(network=record.network, names=names, ip=ip)
            )
        except CarteError as error:
            self.ctx.log.info("DNS name of %s not set: %s", record.key, error.message)

    async def _forget(self, keys: list[str]) -> None:
        async with self._lock:
            gone = [self._vips.pop(k) for k in keys if k in self._vips]
            for record in gone:
                self._ready.pop(record.key, None)
                await self.ctx.store.delete(service_key(record.key))
        for record in gone:
            await self._apply_vip(record, assigned=False)
            await self.ctx.bus.publish(_assigned(record, "", []))
        if gone:
            await self._rebuild([])
        for stack in {r.stack for r in gone}:
            await self._write_hosts(stack)

    async def _write_hosts(self, stack: str, container_ids: list[str] | None = None) -> None:
        """End the /etc/hosts of the stack's ready replicas (or of `container_ids`) with the
        VIPs of its services, so their names resolve while the daemon's DNS is down."""
        services = sorted((r for r in self._vips.values() if r.stack == stack), key=_by_name)
        block = _HOSTS_MARK + "".join(
            f"{r.vip}\t{r.service} {r.service}.{r.stack}\n" for r in services
        )
        if container_ids is None:
            container_ids = [
                c
                for key, ready in self._ready.items()
                if key in self._vips and self._vips[key].stack == stack
                for c in ready
            ]
        root = self.ctx.root / "containers"  # the containers handler's ContainerPaths.hosts_file
        for container_id in container_ids:
            try:
                await trio.to_thread.run_sync(
                    _end_hosts, root / container_id / "hosts", block, limiter=self._limiter
                )
            except OSError as error:
                self.ctx.log.warning("hosts file of %s: %s", container_id[:12], error.strerror)

    # --- the table ----------------------------------------------------------------------------

    async def _rebuild(self, changed: list[str]) -> None:
        """Render every service with its ready replicas, apply it in one transaction, then
        publish `ServiceAddressAssigned` for the `changed` services."""
        async with self._lock:
            services = [
                lb.BalancedService(
                    name=key,
                    vip=record.vip_address,
                    ports=tuple(record.ports),
                    backends=tuple(self._ready.get(key, {}).values()),
                )
                for key, record in self._vips.items()
            ]
            balanced = {c for key in self._vips for c in self._ready.get(key, {})}
            try:
                await trio.to_thread.run_sync(
                    lb.apply, self._table, services, limiter=self._limiter
                )
            except CarteError as error:
                self.ctx.log.error("load-balancing table not applied: %s", error.message)
                return
            self._balanced = balanced
            self._applied.set()
            self._applied = trio.Event()
            for key, record in list(self._vips.items()):
                ready = {c: str(ip) for c, ip in self._ready.get(key, {}).items()}
                if ready != record.ready:  # kept for a restarted daemon
                    record = msgspec.structs.replace(record, ready=ready)
                    await self.ctx.store.put(service_key(key), record)
                    self._vips[key] = record
            facts = [
                _assigned(record, record.vip, [str(ip) for ip in self._ready.get(key, {}).values()])
                for key, record in self._vips.items()
                if key in changed
            ]
        for fact in facts:
            await self.ctx.bus.publish(fact)


def _by_name(record: ServiceVip) -> str:
    return record.service


def _end_hosts(path: Path, block: str) -> None:
    """Replace what follows `_HOSTS_MARK` in a hosts file by `block`, in place (same inode: it
    is bind-mounted); a container gone meanwhile is skipped."""
    try:
        with open(path, "r+") as file:
            text = file.read()
            kept = text.split(_HOSTS_MARK, 1)[0]
            if kept and not kept.endswith("\n"):
                kept += "\n"
            if kept + block != text:
                file.seek(0)
                file.truncate(0)
                file.write(kept + block)
    except FileNotFoundError:
        pass


def _assigned(record: ServiceVip, vip: str, backends: list[str]) -> ServiceAddressAssigned:
    return ServiceAddressAssigned(
        id=record.key,
        stack=record.stack,
        service=record.service,
        network=record.network,
        vip=vip,
        backends=sorted(backends),
    )
