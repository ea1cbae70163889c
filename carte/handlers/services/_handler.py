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
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import msgspec
import trio

from carte.api.errors import CarteError, Conflict
from carte.api.events import (
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
from carte.net import lb


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
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rebuild VIPs and ready sets from the store and the stacks handler, then idle.

        On cancellation (daemon stop) the table and VIP addresses stay, so traffic keeps
        flowing to replicas that keep running; the next start rebuilds them."""
        for entry in await self.ctx.store.list(PREFIX):
            record = entry.decode(ServiceVip)
            self._vips[record.key] = record
        try:
            for row in await self.ctx.bus.request(ListReplicas()):
                if row.ready and row.ip:
                    key = f"{row.stack}_{row.service}"
                    self._ready.setdefault(key, {})[row.container_id] = IPv4Address(row.ip)
        except CarteError as error:
            self.ctx.log.info("services: replicas not known yet: %s", error.message)
        for record in self._vips.values():
            await self._assign(record)
            await self._hairpin(record)
        if self._vips:  # with no service there is no table to rebuild: no nft call at start
            await self._rebuild(list(self._vips))
        task_status.started()
        await trio.sleep_forever()

    # --- facts from the stacks handler -------------------------------------------------------

    @on(ServiceUpdated)
    async def service_updated(self, fact: ServiceUpdated) -> None:
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
            if record is None or record.network != fact.network:
                if record is not None:
                    await self._release(record)
                try:
                    record = await self._allocate(fact.stack, fact.service, fact.network)
                except CarteError as error:
                    self.ctx.log.error("no VIP for %s: %s", key, error.message)
                    return
            record = msgspec.structs.replace(record, ports=ports)
            await self.ctx.store.put(service_key(key), record)
            self._vips[key] = record
        await self._assign(record)
        await self._rebuild([key])

    @on(ReplicaReady)
    async def replica_ready(self, fact: ReplicaReady) -> None:
        if not fact.ip:
            return
        key = f"{fact.stack}_{fact.service}"
        record = self._vips.get(key)
        if record is not None:
            await self._hairpin(record)
        self._ready.setdefault(key, {})[fact.container_id] = IPv4Address(fact.ip)
        await self._rebuild([key])

    @on(ReplicaNotReady)
    async def replica_not_ready(self, fact: ReplicaNotReady) -> None:
        key = f"{fact.stack}_{fact.service}"
        if self._ready.get(key, {}).pop(fact.container_id, None) is not None:
            await self._rebuild([key])

    @on(ServiceRemoved)
    async def service_removed(self, fact: ServiceRemoved) -> None:
        await self._forget([f"{fact.stack}_{fact.service}"])

    @on(StackRemoved)
    async def stack_removed(self, fact: StackRemoved) -> None:
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

    async def _assign(self, record: ServiceVip) -> None:
        try:
            await trio.to_thread.run_sync(
                lb.assign_vip, record.bridge, record.vip_address, limiter=self._limiter
            )
        except CarteError as error:
            self.ctx.log.warning("VIP %s of %s: %s", record.vip, record.key, error.message)
        await self._name(record, record.vip)

    async def _hairpin(self, record: ServiceVip) -> None:
        try:
            await trio.to_thread.run_sync(lb.enable_hairpin, record.bridge, limiter=self._limiter)
        except CarteError as error:
            self.ctx.log.warning("hairpin on %s: %s", record.bridge, error.message)

    async def _release(self, record: ServiceVip) -> None:
        try:
            await trio.to_thread.run_sync(
                lb.release_vip, record.bridge, record.vip_address, limiter=self._limiter
            )
        except CarteError as error:
            self.ctx.log.warning("VIP %s of %s: %s", record.vip, record.key, error.message)
        await self._name(record, "")

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
            await self._release(record)
            await self.ctx.bus.publish(_assigned(record, "", []))
        if gone:
            await self._rebuild([])

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
            try:
                await trio.to_thread.run_sync(
                    lb.apply, self._table, services, limiter=self._limiter
                )
            except CarteError as error:
                self.ctx.log.error("load-balancing table not applied: %s", error.message)
                return
            facts = [
                _assigned(record, record.vip, [str(ip) for ip in self._ready.get(key, {}).values()])
                for key, record in self._vips.items()
                if key in changed
            ]
        for fact in facts:
            await self.ctx.bus.publish(fact)


def _assigned(record: ServiceVip, vip: str, backends: list[str]) -> ServiceAddressAssigned:
    return ServiceAddressAssigned(
        id=record.key,
        stack=record.stack,
        service=record.service,
        network=record.network,
        vip=vip,
        backends=sorted(backends),
    )
