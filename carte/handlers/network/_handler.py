"""The "network" handler: bridge networks, container endpoints, published ports, policies, DNS.

The store (``networks/<name>``, see `_records`) is the source of truth; the host is
made to match it: on start every bridge is ensured, endpoints whose veth vanished (their
container died while the daemon was away) are released, and Carte's nftables table is rebuilt
in one transaction. Every change follows the same order: check all input (names, subnets,
addresses, ports) before touching the host, make the links, commit the record, rebuild the
table; a failure undoes what that change made, so nothing is left half-configured.

Link work goes through one `LinkControl` on a worker thread, one call at a time. Commands are
serialized by one lock. Cancellation during a change runs its undo shielded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio

from carte.api.containers import Endpoint, PortSpec
from carte.api.errors import CarteError, Conflict, InvalidArgument, NotFound, Unavailable
from carte.api.events import (
    AddNetworkPolicy,
    AttachContainerNetwork,
    ConnectNetwork,
    CreateNetwork,
    DetachContainerNetwork,
    DisconnectNetwork,
    InspectNetwork,
    ListNetworkPolicies,
    ListNetworks,
    NetworkCreated,
    NetworkRemoved,
    PruneNetworks,
    RemoveNetwork,
    RemoveNetworkPolicy,
    ResolveContainer,
    SetContainerEndpoint,
    SetServiceAddress,
)
from carte.api.events.networks import (
    AllocateOverlay,
    ListOverlayEndpoints,
    OverlayEndpoint,
    OverlayEndpointsChanged,
    OverlayPeer,
    OverlayService,
    OverlaySpec,
    SetOverlayPeers,
)
from carte.api.networks import Network, NetworkMember, NetworkPolicy, NetworkPruneResult
from carte.api.timestamps import now_rfc3339
from carte.engine import Handler, HandlerContext, on
from carte.handlers.network._dns import Resolver, host_upstreams, parse_upstream
from carte.handlers.network._options import NetworkOptions
from carte.handlers.network._overlay import (
    BEFORE,
    TABLE_SUFFIX,
    balanced,
    encrypted_option,
    node_address,
    overlay_endpoints,
)
from carte.handlers.network._records import (
    DEFAULT_NAMES,
    DEFAULT_NETWORK,
    PREFIX,
    PRODUCTION_ROOT,
    RESERVED,
    EndpointRecord,
    NetworkRecord,
    bridge_name,
    default_bridge_name,
    nft_table_name,
    record_decoder,
)
from carte.handlers.network._ruleset import build_ruleset, parse_selector
from carte.net import (
    AddressAllocator,
    AddressPool,
    Ruleset,
    check_port_free,
    check_subnet_free,
    choose_subnet,
    default_gateway,
    parse_address,
    parse_pool,
    parse_subnet,
    pick_free_port,
)
from carte.net.ports import ANY_ADDRESS

if TYPE_CHECKING:
    from carte.net.links import LinkControl
    from carte.net.overlay import OverlayLinks

T = TypeVar("T")
_DEFAULT_BRIDGE_IDLE_SECONDS = 60.0
_ALTERNATIVES = 8
"""Free subnets offered besides the first when a network is made in a cluster."""
_SHUTDOWN_SECONDS = 5.0
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_network_name(name: str) -> str:
    valid = 0 < len(name) <= 64 and name[0].isalnum() and set(name) <= _NAME_CHARS
    if not valid:
        raise InvalidArgument(
            f'network name "{name}" is invalid; use letters, digits, "_", "." and "-", '
            "starting with a letter or digit"
        )
    if name in RESERVED:
        raise Conflict(f'network name "{name}" is reserved; choose another name')
    return name


class NetworkHandler(Handler):
    """Networks and container endpoints; owns Carte's nftables table and the DNS resolver."""

    name = "network"
    Options = NetworkOptions
    section = "network"
    # Connect/DisconnectNetwork ask the containers handler (ResolveContainer) without requiring
    # it: that would start this handler after it, yet it detaches networks while it starts.

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        settings: NetworkOptions = self.ctx.options
        self.table = nft_table_name(ctx.root)
        self.default_bridge = default_bridge_name(ctx.root, settings.default_bridge)
        self.pools = [parse_pool(p) for p in settings.pools]
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)
        self._links: LinkControl | None = None
        self._overlay: OverlayLinks | None = None
        self._peers: dict[str, list[OverlayPeer]] = {}
        """The last `SetOverlayPeers`, so a VXLAN device made later is programmed at once."""
        self._overlay_mtus: dict[str, int] = {}
        self._services: list[OverlayService] = []
        self._cluster_policies: dict[str, list[NetworkPolicy]] = {}
        """The control plane's policies of overlay networks, from the last `SetOverlayPeers`."""
        """The cluster's services on overlay networks, from the last `SetOverlayPeers`."""
        self._service_vips: set[tuple[str, str]] = set()
        """(bridge, VIP) pairs this node holds for them."""
        self._service_rules: str | None = None
        """What table ``<table>-ov`` holds (None: unknown)."""
        self._mtu: int | None = None
        """The uplink's MTU, read when the first bridge is made."""
        self._networks: dict[str, NetworkRecord] = {}
        # The last address handed out per network: the next allocation starts after it.
        self._cursors: dict[str, IPv4Address] = {}
        self._applied: Ruleset | None = None
        """What Carte's table holds (None: unknown), so unchanged rules cost no nft call."""
        self._retire_scope: trio.CancelScope | None = None
        self._bridges_up: set[str] = set()
        """Bridges made (with sysctls and DNS) since start, so an attach skips that work."""
        self._dns_scopes: dict[str, trio.CancelScope] = {}
        self._unplugging: dict[str, trio.Event] = {}
        """Stopped containers whose host veth ends are being deleted after their detach."""
        self._nursery: trio.Nursery | None = None
        upstreams = [parse_upstream(u) for u in settings.dns_upstreams] or host_upstreams()
        self.resolver = Resolver(
            self._lookup,
            upstreams,
            settings.dns_upstream_timeout,
            ctx.log,
            max_pending=settings.dns_max_inflight,
        )

    async def check(self) -> str | None:
        import shutil

        if shutil.which("nft") is None:
            return "the nft command is not installed; install nftables"
        return None

    # --- thread and store plumbing ----------------------------------------------------------

    async def _host(self, work: Callable[[LinkControl], T]) -> T:
        """Run `work` with the LinkControl on the one link thread (opened on first use)."""
        if self._links is None:
            self._links = await trio.to_thread.run_sync(_open_links, limiter=self._limiter)
        links = self._links
        return await trio.to_thread.run_sync(lambda: work(links), limiter=self._limiter)

    async def _vxlan(self, work: Callable[[OverlayLinks], T]) -> T:
        """Run `work` with the OverlayLinks on the same link thread (opened on first use)."""
        if self._overlay is None:
            self._overlay = await trio.to_thread.run_sync(_open_overlay, limiter=self._limiter)
        overlay = self._overlay
        return await trio.to_thread.run_sync(lambda: work(overlay), limiter=self._limiter)

    async def _uplink_mtu(self) -> int:
        if self._mtu is None:
            self._mtu = await self._host(lambda links: links.uplink_mtu())
        return self._mtu

    async def _member_mtu(self, network: NetworkRecord) -> int:
        """The MTU of a network's bridge and members: an overlay's leaves room for VXLAN."""
        if not network.is_overlay:
            return await self._uplink_mtu()
        from carte.net.overlay import ENCAPSULATION

        underlay = network.underlay
        if underlay not in self._overlay_mtus:
            mtu = await self._vxlan(lambda o: o.underlay_mtu(IPv4Address(underlay)))
            self._overlay_mtus[underlay] = mtu - ENCAPSULATION
        return self._overlay_mtus[underlay]

    async def _save(self, network: NetworkRecord) -> None:
        await self.ctx.store.put(PREFIX + network.name, network)
        before = self._networks.get(network.name)
        self._networks[network.name] = network
        if network.is_overlay and (before is None or before.endpoints != network.endpoints):
            await self.ctx.bus.publish(
                OverlayEndpointsChanged(
                    id=network.name, network=network.name, endpoints=_reported(network)
                )
            )

    async def _apply_rules(self) -> None:
        """Rebuild Carte's table from the records (Internal/Unavailable if nft refuses)."""
        from carte.net import nft, sysctl

        networks = [
            n for n in self._networks.values() if n.has_bridge or n.bridge in self._bridges_up
        ]
        ruleset = build_ruleset(
            self.table,
            networks,
            log_denied=self.ctx.options.log_denied,
            remote=self._peers,
            cluster=self._cluster_policies,
        )
        if any(n.policies for n in ruleset.networks):
            if await trio.to_thread.run_sync(sysctl.enable_bridge_netfilter):
                self.ctx.log.info("enabled net.bridge.bridge-nf-call-iptables for policies")
        if ruleset == self._applied:
            return  # e.g. a container without published ports on a network without policies
        self._applied = None
        await trio.to_thread.run_sync(nft.apply, ruleset, limiter=self._limiter)
        self._applied = ruleset

    def _network(self, name: str) -> NetworkRecord:
        network = self._networks.get(DEFAULT_NETWORK if name in DEFAULT_NAMES else name)
        if network is None:
            matches = [n for n in self._networks.values() if n.id.startswith(name)]
            if len(matches) == 1 and name:
                return matches[0]
            raise NotFound(f'network "{name}" not found; see carte network ls')
        return network

    # --- start-up: make the host match the store --------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile the host with the store, then serve DNS until cancelled.

        Fails (and is restarted by the supervisor) if the host cannot be configured."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async with self._lock:
                    await self._reconcile()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                with trio.move_on_after(_SHUTDOWN_SECONDS):
                    async with self._lock:
                        await _quietly(self._retire_idle_default())
                links, self._links = self._links, None
                if links is not None:
                    await trio.to_thread.run_sync(links.close, limiter=self._limiter)
                overlay, self._overlay = self._overlay, None
                if overlay is not None:
                    await trio.to_thread.run_sync(overlay.close, limiter=self._limiter)

    def _schedule_retire(self) -> None:
        """Remove the idle default bridge after a grace period (an attach meanwhile keeps it),
        so back-to-back `run --rm` do not rebuild it each time."""
        self._cancel_retire()
        if self._nursery is None:
            return
        scope = self._retire_scope = trio.CancelScope()

        async def retire_later() -> None:
            with scope:
                await trio.sleep(_DEFAULT_BRIDGE_IDLE_SECONDS)
                async with self._lock:
                    await self._retire_idle_default()

        self._nursery.start_soon(retire_later)

    def _cancel_retire(self) -> None:
        if self._retire_scope is not None:
            self._retire_scope.cancel()
            self._retire_scope = None

    async def _retire_idle_default(self) -> None:
        network = self._networks.get(DEFAULT_NETWORK)
        if network is not None and not network.endpoints and network.bridge in self._bridges_up:
            await self._remove_bridge(network)
            await self._apply_rules()

    async def _reconcile(self) -> None:
        from carte.net import nft

        self._networks = {
            n.name: n
            for n in (record_decoder.decode(e.value) for e in await self.ctx.store.list(PREFIX))
        }
        if DEFAULT_NETWORK not in self._networks:
            # Host routes are checked when its bridge is first made (_refresh_default_subnet),
            # so an idle daemon never loads pyroute2.
            subnet = await self._free_subnet(check_host=False)
            await self._save(
                NetworkRecord(
                    name=DEFAULT_NETWORK,
                    id=secrets.token_hex(32),
                    created=now_rfc3339(),
                    bridge=self.default_bridge,
                    subnet=str(subnet),
                    gateway=str(default_gateway(subnet)),
                )
            )
        for network in list(self._networks.values()):
            await self._reconcile_network(network)
        await self._apply_rules()
        for chain in await trio.to_thread.run_sync(nft.forward_drop_chains):
            self.ctx.log.warning(
                "nftables chain %s drops forwarded traffic by default; containers on Carte "
                "networks cannot reach the outside until it accepts Carte's bridges",
                chain,
            )

    async def _reconcile_network(self, network: NetworkRecord) -> None:
        live: dict[str, EndpointRecord] = {}
        for cid, endpoint in network.endpoints.items():
            if await self._host(partial(_index_of, name=endpoint.host_ifname)):
                live[cid] = endpoint
            else:
                self.ctx.log.info(
                    "released %s of container %s on network %s (its interface is gone)",
                    endpoint.ip,
                    cid[:12],
                    network.name,
                )
        if live != network.endpoints:
            network = msgspec.structs.replace(network, endpoints=live)
            await self._save(network)
        if network.has_bridge:
            await self._make_bridge(network)
            known = {e.host_ifname for e in network.endpoints.values()}
            if network.is_overlay:
                known.add(_vxlan_name(network.bridge))
            ports = await self._host(lambda links: links.ports_of(network.bridge))
            for stale in set(ports) - known:
                await self._host(partial(_delete_link, name=stale))
                self.ctx.log.info("removed stale interface %s from %s", stale, network.bridge)
        elif await trio.to_thread.run_sync(_link_exists, network.bridge):  # a killed daemon's
            await self._remove_bridge(network)

    async def _free_subnet(self, *, check_host: bool = True) -> IPv4Network:
        """A pool subnet overlapping no other network (nor, with `check_host`, a host route)."""
        taken = [n.subnet_net for n in self._networks.values()]
        if check_host:
            taken += await self._host(lambda links: links.host_networks())
        return choose_subnet(taken, self._candidates())

    async def _free_subnets(self, first: IPv4Network, count: int) -> list[IPv4Network]:
        """Up to `count` more free pool subnets after `first`."""
        taken = [n.subnet_net for n in self._networks.values()]
        taken += [first, *await self._host(lambda links: links.host_networks())]
        found: list[IPv4Network] = []
        for _ in range(count):
            try:
                found.append(choose_subnet(taken + found, self._candidates()))
            except Conflict:
                break
        return found

    def _candidates(self) -> list[AddressPool]:
        """The pools' subnets in order; for a test daemon (any root but the production one)
        rotated by its root, so daemons started at the same moment rarely pick the same one."""
        subnets = [AddressPool(s, s.prefixlen) for pool in self.pools for s in pool.subnets()]
        if self.ctx.root == PRODUCTION_ROOT or not subnets:
            return subnets
        shift = int(nft_table_name(self.ctx.root).rsplit("-", 1)[-1], 16) % len(subnets)
        return subnets[shift:] + subnets[:shift]

    async def _make_bridge(self, network: NetworkRecord) -> None:
        """Ensure the bridge, its address, the sysctls it needs and its DNS listener."""
        from carte.net import sysctl

        if network.bridge in self._bridges_up:
            return
        gateway = IPv4Interface(f"{network.gateway}/{network.subnet_net.prefixlen}")
        mtu = await self._member_mtu(network)
        await self._host(lambda links: links.ensure_bridge(network.bridge, gateway, mtu))
        if network.is_overlay:
            local = IPv4Address(network.underlay)
            await self._vxlan(lambda o: o.ensure_vxlan(network.bridge, network.vni, local, mtu))
            own = node_address(network)
            if own is not None:  # replies to VIP connections SNATed here come back to it
                from carte.net import lb

                await self._on_link_thread(lb.assign_vip, network.bridge, own)
            await self._program_peers(network)
        await trio.to_thread.run_sync(sysctl.enable_route_localnet, network.bridge)
        if await trio.to_thread.run_sync(sysctl.enable_ip_forward):
            self.ctx.log.info("enabled net.ipv4.ip_forward so containers reach the outside")
        await self._start_dns(network)
        self._bridges_up.add(network.bridge)

    async def _remove_bridge(self, network: NetworkRecord) -> None:
        self._stop_dns(network)
        self._bridges_up.discard(network.bridge)
        if network.is_overlay:
            await self._vxlan(lambda o: o.delete(network.bridge))
        await self._host(lambda links: links.delete_link(network.bridge))
        if network.is_overlay:  # its VIPs went with the bridge; its services leave the table
            self._service_vips = {(b, v) for b, v in self._service_vips if b != network.bridge}
            await self._program_services()

    async def _start_dns(self, network: NetworkRecord) -> None:
        if not self.ctx.options.dns or self._nursery is None:
            return
        if network.bridge in self._dns_scopes:
            return
        scope = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await self.resolver.serve(network.gateway_ip, task_status=task_status)

        try:
            await self._nursery.start(serve)
        except OSError as exc:
            self.ctx.log.warning(
                "no DNS for network %s: cannot bind %s:53 (%s)",
                network.name,
                network.gateway,
                exc.strerror,
            )
            return
        self._dns_scopes[network.bridge] = scope

    def _stop_dns(self, network: NetworkRecord) -> None:
        scope = self._dns_scopes.pop(network.bridge, None)
        if scope is not None:
            scope.cancel()

    # --- DNS lookups -------------------------------------------------------------------------

    def _lookup(self, asker: IPv4Address, name: str) -> list[IPv4Address] | None:
        """Carte names (containers, aliases, services) on the asker's networks; [] for an
        unknown single-label or ``*.carte`` name; None to forward any other name."""
        wanted = name.removesuffix(".carte")
        asker_text = str(asker)
        # the asking container, found by its address on the network it asked through: the
        # names of every network it is on count (Compose: a service name resolves on each
        # network the two share), not only that one's
        askers = {
            e.container_id
            for network in self._networks.values()
            for e in network.endpoints.values()
            if e.ip == asker_text
        }
        found: list[IPv4Address] = []
        for network in self._networks.values():
            endpoints = network.endpoints.values()
            if not any(e.container_id in askers for e in endpoints):
                continue
            service_ip = network.service_names.get(wanted)
            if service_ip:
                found.append(IPv4Address(service_ip))
            for e in endpoints:
                names = {e.name, e.hostname, e.container_id[:12], *e.aliases}
                if wanted in {n.lower() for n in names}:
                    found.append(IPv4Address(e.ip))
            if network.is_overlay:
                found += self._overlay_lookup(network, wanted.lower(), service_ip)
        if not found and "." in name and not name.endswith(".carte"):
            return None
        return found

    def _overlay_lookup(
        self, network: NetworkRecord, wanted: str, known: str | None
    ) -> list[IPv4Address]:
        """Names on overlay `network` held by other nodes: their containers and the
        cluster's services (`known`: a VIP found already)."""
        found = [
            IPv4Address(s.vip)
            for s in self._services
            if network.name in (s.network, *s.networks) and wanted in s.names and s.vip != known
        ]
        found += [IPv4Address(p.ip) for p in self._peers.get(network.name, []) if wanted in p.names]
        return found

    # --- networks ---------------------------------------------------------------------------

    @on(CreateNetwork)
    async def create(self, command: CreateNetwork) -> Network:
        """Create a bridge network. Bad or clashing input raises before anything is made; a
        failure while making the bridge removes it and the record again."""
        name = check_network_name(command.name)
        encrypted = encrypted_option(name, command.options)
        async with self._lock:
            if name in self._networks:
                raise Conflict(f'network "{name}" already exists; choose another name')
            if encrypted:
                await self._check_encryption(name)
            others = {n.name: n.subnet_net for n in self._networks.values()}
            if command.subnet:
                subnet = parse_subnet(command.subnet)
                check_subnet_free(subnet, others)
                await self._check_host_routes(subnet)
            else:
                if command.gateway:
                    raise InvalidArgument(
                        f'gateway "{command.gateway}" needs a --subnet to live in; give both'
                    )
                subnet = await self._free_subnet()
            gateway = (
                parse_address(command.gateway, subnet, what="gateway")
                if command.gateway
                else default_gateway(subnet)
            )
            spec = await self._overlay_spec(
                name, subnet, asked=bool(command.subnet), encrypted=encrypted
            )
            if spec is not None and spec.subnet != str(subnet):
                subnet, gateway = parse_subnet(spec.subnet), IPv4Address(spec.gateway)
                check_subnet_free(subnet, others)
                await self._check_host_routes(subnet)
            network = NetworkRecord(
                name=name,
                id=secrets.token_hex(32),
                created=now_rfc3339(),
                bridge=bridge_name(self.ctx.root, name),
                subnet=str(subnet),
                gateway=str(gateway),
                internal=command.internal,
                labels=dict(command.labels),
                encrypted=spec.encrypted if spec else encrypted,
                vni=spec.vni if spec else 0,
                slice=spec.slice if spec else "",
                underlay=spec.underlay if spec else "",
            )
            await self._save(network)
            try:
                await self._make_bridge(network)
                await self._apply_rules()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._forget_network(network)
                raise
        await self.ctx.bus.publish(NetworkCreated(id=network.name))
        return await self._view(network)

    async def _check_encryption(self, name: str) -> None:
        """Refuse an encrypted network this node cannot encrypt (never made in clear)."""
        from carte.net.wireguard import encryption_support

        support = await trio.to_thread.run_sync(encryption_support, limiter=self._limiter)
        if not support.wireguard:
            raise Unavailable(
                f'network "{name}" asks for encryption, but {support.wireguard_detail}; '
                "load the wireguard module or create the network without encrypted"
            )

    async def _check_host_routes(self, subnet: IPv4Network) -> None:
        host = await self._host(lambda links: links.host_networks())
        clash = next((h for h in host if h.overlaps(subnet)), None)
        if clash is not None:
            raise Conflict(
                f"subnet {subnet} overlaps the host's route {clash}; choose another --subnet"
            )

    async def _overlay_spec(
        self, name: str, subnet: IPv4Network, *, asked: bool, encrypted: bool
    ) -> OverlaySpec | None:
        """The cluster's overlay for network `name` (None on a daemon outside a cluster)."""
        alternatives = [] if asked else await self._free_subnets(subnet, _ALTERNATIVES)
        try:
            return await self.ctx.bus.request(
                AllocateOverlay(
                    name=name,
                    subnet=str(subnet),
                    asked=asked,
                    alternatives=[str(s) for s in alternatives],
                    encrypted=encrypted,
                )
            )
        except Unavailable as error:
            if "no handler answers" in error.message:
                return None  # no overlay handler in this daemon: a bridge of this node
            raise

    async def _forget_network(self, network: NetworkRecord) -> None:
        """Remove a network's bridge, DNS listener, record and rules (best effort)."""
        await self._remove_bridge(network)
        await self.ctx.store.delete(PREFIX + network.name)
        self._networks.pop(network.name, None)
        await self._apply_rules()

    async def _view(self, network: NetworkRecord) -> Network:
        from carte.net import nft

        denied = None
        if network.policies:
            counts = await trio.to_thread.run_sync(nft.denied_counts, self.table)
            denied = counts.get(network.bridge)
        return Network(
            name=network.name,
            id=network.id,
            created=network.created,
            bridge=network.bridge,
            subnet=network.subnet,
            gateway=network.gateway,
            internal=network.internal,
            labels=network.labels,
            encrypted=network.encrypted,
            driver="overlay" if network.is_overlay else "bridge",
            containers=[
                NetworkMember(
                    container_id=e.container_id,
                    name=e.name,
                    ip_address=e.ip,
                    mac_address=e.mac,
                    aliases=e.aliases,
                )
                for e in network.endpoints.values()
            ],
            policies=network.policies,
            denied_packets=denied.packets if denied else 0,
            denied_bytes=denied.bytes if denied else 0,
        )

    @on(ListNetworks)
    async def list_networks(self, command: ListNetworks) -> list[Network]:
        return [await self._view(n) for n in sorted(self._networks.values(), key=_order)]

    @on(InspectNetwork)
    async def inspect(self, command: InspectNetwork) -> Network:
        return await self._view(self._network(command.name))

    @on(RemoveNetwork)
    async def remove(self, command: RemoveNetwork) -> None:
        async with self._lock:
            network = self._network(command.name)
            if network.is_default:
                raise Conflict(
                    f'network "{command.name}" is the default network; it cannot be removed'
                )
            if network.endpoints:
                users = ", ".join(sorted(e.name for e in network.endpoints.values()))
                raise Conflict(
                    f'network "{network.name}" is in use by container(s) {users}; '
                    "remove them or disconnect them first"
                )
            await self._forget_network(network)
        await self.ctx.bus.publish(NetworkRemoved(id=network.name))

    @on(PruneNetworks)
    async def prune(self, command: PruneNetworks) -> NetworkPruneResult:
        unused = [n.name for n in self._networks.values() if not n.is_default and not n.endpoints]
        deleted = []
        for name in unused:
            try:
                await self.remove(RemoveNetwork(name=name))
            except (NotFound, Conflict):
                continue  # removed or joined meanwhile
            deleted.append(name)
        return NetworkPruneResult(deleted=sorted(deleted))

    # --- endpoints --------------------------------------------------------------------------

    @on(AttachContainerNetwork)
    async def attach(self, command: AttachContainerNetwork) -> Endpoint:
        """Plug a created container into a network with a default route through it."""
        started = trio.current_time()
        labels = dict(command.labels)
        await self._unplugged(command.container_id)  # a restart: its veth names are taken
        async with self._lock:
            endpoint = await self._attach(
                self._network(command.network),
                container_id=command.container_id,
                name=command.container_name,
                hostname=command.hostname,
                netns=command.netns_path,
                aliases=command.aliases,
                ip=command.ip,
                ports=command.ports,
                labels=labels,
                default_route=command.default_route,
                mac=command.mac,
            )
        self.ctx.log.info(
            "attached container %s to network %s as %s in %.1f ms",
            command.container_id[:12],
            endpoint.network,
            endpoint.ip_address,
            (trio.current_time() - started) * 1000,
        )
        return endpoint

    async def _attach(
        self,
        network: NetworkRecord,
        *,
        container_id: str,
        name: str,
        hostname: str,
        netns: str,
        aliases: list[str],
        ip: str,
        ports: list[PortSpec],
        labels: dict[str, str],
        default_route: bool,
        mac: str = "",
    ) -> Endpoint:
        if network.is_default:
            self._cancel_retire()
        if container_id in network.endpoints:
            raise Conflict(f'container "{name}" is already connected to network "{network.name}"')
        allocator = _allocator(network, self._cursors.get(network.name))
        requested = parse_address(ip, network.subnet_net) if ip else None
        resolved_ports = await self._claim_ports(ports)
        address = allocator.allocate(requested)
        if network.is_default and not network.endpoints:
            network = await self._refresh_default_subnet(network, requested)
            address = AddressAllocator(network.subnet_net, network.gateway_ip).allocate(requested)
        if requested is None:
            self._cursors[network.name] = address
        host_ifname = _host_veth(container_id, network.name)
        used = {
            n.endpoints[container_id].ifname
            for n in self._networks.values()
            if container_id in n.endpoints
        }
        ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
        endpoint = EndpointRecord(
            container_id=container_id,
            name=name,
            hostname=hostname,
            aliases=list(aliases),
            ip=str(address),
            mac="",
            host_ifname=host_ifname,
            ifname=ifname,
            ports=resolved_ports,
            labels=labels,
        )
        updated = msgspec.structs.replace(
            network, endpoints={**network.endpoints, container_id: endpoint}
        )
        try:
            await self._make_bridge(updated)
            mtu = await self._member_mtu(updated)
            made = await self._host(
                lambda links: links.connect(
                    netns,
                    bridge=updated.bridge,
                    host_ifname=host_ifname,
                    address=IPv4Interface(f"{address}/{updated.subnet_net.prefixlen}"),
                    gateway=updated.gateway_ip if default_route else None,
                    mtu=mtu,
                    ifname=ifname,
                    mac=mac,
                )
            )
            endpoint.mac = made.mac
            await self._save(updated)
            await self._apply_rules()
        except BaseException:
            with trio.CancelScope(shield=True):
                self._bridges_up.discard(updated.bridge)  # ensured again by the next attach
                await self._host(lambda links: links.delete_link(host_ifname))
                await self._save(network)
                if not network.has_bridge:
                    await self._remove_bridge(network)
                await _quietly(self._apply_rules())
            raise
        for port in resolved_ports:
            if port.protocol == "udp":
                await trio.to_thread.run_sync(_forget_udp_flows, port.host_port)
        return Endpoint(
            network=updated.name,
            ip_address=str(address),
            prefix_len=updated.subnet_net.prefixlen,
            gateway=updated.gateway,
            mac_address=made.mac,
            aliases=list(aliases),
            dns_servers=[updated.gateway] if self.ctx.options.dns else [],
            ports=resolved_ports,
        )

    async def _refresh_default_subnet(
        self, network: NetworkRecord, requested: IPv4Address | None
    ) -> NetworkRecord:
        """Before the idle default network is used again, move its subnet if another link
        took it (its own bridge's address does not count). Only ever called without
        endpoints: a network with members is never re-addressed. The old bridge goes with its
        DNS listener, so the caller's `_make_bridge` makes bridge, route and DNS on the new
        subnet; its `_apply_rules` moves the NAT with the record."""
        host = await self._host(lambda links: links.host_networks(besides=network.bridge))
        if not any(h.overlaps(network.subnet_net) for h in host) or requested is not None:
            return network
        subnet = await self._free_subnet()
        self.ctx.log.info(
            "default network moves to %s (%s is taken on the host)", subnet, network.subnet
        )
        moved = msgspec.structs.replace(
            network, subnet=str(subnet), gateway=str(default_gateway(subnet))
        )
        if network.bridge in self._bridges_up or await trio.to_thread.run_sync(
            _link_exists, network.bridge
        ):
            await self._remove_bridge(network)
        await self._save(moved)
        return moved

    async def _claim_ports(self, ports: list[PortSpec]) -> list[PortSpec]:
        """Host ports for `ports`, each checked free (or picked); `Conflict` names a taken one."""
        published = {
            (p.host_port, p.protocol): p
            for n in self._networks.values()
            for e in n.endpoints.values()
            for p in e.ports
        }
        resolved: list[PortSpec] = []
        for port in ports:
            host_ip = IPv4Address(port.host_ip) if port.host_ip else ANY_ADDRESS
            taken = {k[0] for k in published if k[1] == port.protocol}
            if port.host_port:
                if (port.host_port, port.protocol) in published:
                    raise Conflict(
                        f"host port {port.host_port}/{port.protocol} is already published by "
                        "another container; choose another host port"
                    )
                await trio.to_thread.run_sync(
                    check_port_free, host_ip, port.host_port, port.protocol
                )
                host_port = port.host_port
            else:
                host_port = await trio.to_thread.run_sync(
                    pick_free_port, host_ip, port.protocol, taken
                )
            claimed = msgspec.structs.replace(port, host_port=host_port)
            published[(host_port, port.protocol)] = claimed
            resolved.append(claimed)
        return resolved

    @on(DetachContainerNetwork)
    async def detach(self, command: DetachContainerNetwork) -> None:
        """Remove the stopped container from every network; idempotent (``-`` is a no-op
        probe). Deleting a veth pair costs the kernel 6-16 ms, so the records are updated
        and the answer given first, and the pairs deleted after it; a detach that finds the
        container on no network waits until they are gone (the containers handler asks
        twice: before the exit is recorded, and before waiters hear of it)."""
        container_id = command.container_id
        ifnames: list[str] = []
        try:
            async with self._lock:
                for network in list(self._networks.values()):
                    if container_id in network.endpoints:
                        ifnames.append(network.endpoints[container_id].host_ifname)
                        await self._detach(network, container_id, unplug=False)
        finally:
            if ifnames:
                done = self._unplugging[container_id] = trio.Event()
                if self._nursery is None:  # the handler has stopped: at once
                    await self._unplug(ifnames, done)
                else:
                    self._nursery.start_soon(self._unplug, ifnames, done)
        if not ifnames:
            await self._unplugged(container_id)

    async def _unplug(self, ifnames: list[str], done: trio.Event) -> None:
        """Delete host veth ends (with their peers), also when the daemon is stopping."""
        try:
            with trio.CancelScope(shield=True):
                for ifname in ifnames:
                    try:
                        await self._host(partial(_delete_link, name=ifname))
                    except CarteError as error:  # the restarted daemon's reconcile retries
                        self.ctx.log.warning("veth %s not deleted: %s", ifname, error.message)
        finally:
            done.set()
            for container_id, event in list(self._unplugging.items()):
                if event is done:
                    del self._unplugging[container_id]

    async def _unplugged(self, container_id: str) -> None:
        """Wait until the container's veth ends deleted after a detach are gone."""
        pending = self._unplugging.get(container_id)
        if pending is not None:
            await pending.wait()

    async def _detach(
        self, network: NetworkRecord, container_id: str, *, unplug: bool = True
    ) -> None:
        """Take the container off `network`; its host veth end is deleted first if `unplug`,
        else left to the caller."""
        endpoint = network.endpoints[container_id]
        if unplug:
            await self._host(lambda links: links.delete_link(endpoint.host_ifname))
        rest = {k: v for k, v in network.endpoints.items() if k != container_id}
        updated = msgspec.structs.replace(network, endpoints=rest)
        await self._save(updated)
        if not updated.has_bridge:
            self._schedule_retire()
        await self._apply_rules()

    @on(ConnectNetwork)
    async def connect(self, command: ConnectNetwork) -> Endpoint | None:
        """Join a container to one more network: at once if it runs, and again at every start
        (Docker's rule); a stopped container is only remembered (None)."""
        container = await self.ctx.bus.request(ResolveContainer(ref=command.container))
        if container.network in ("none", "host") or container.network.startswith("container:"):
            raise Conflict(
                f'container "{container.name}" uses --network {container.network}; '
                "it cannot join other networks"
            )
        network = self._network(command.network)
        own = DEFAULT_NETWORK if container.network in DEFAULT_NAMES else container.network
        running = container.status in ("running", "paused") and container.pid
        # a running container's own network: `_attach` tells whether it is still joined
        if network.name in container.connected or (not running and network.name == own):
            raise Conflict(
                f'container "{container.name}" is already connected to network "{network.name}"'
            )
        if command.ip:
            parse_address(command.ip, network.subnet_net)
        endpoint = None
        if running:
            async with self._lock:
                endpoint = await self._attach(
                    self._network(network.name),
                    container_id=container.id,
                    name=container.name,
                    hostname=container.hostname,
                    netns=f"/proc/{container.pid}/ns/net",
                    aliases=command.aliases,
                    ip=command.ip,
                    ports=[],
                    labels=dict(container.labels),
                    default_route=False,
                )
        await self.ctx.bus.request(
            SetContainerEndpoint(
                container_id=container.id,
                network=network.name,
                endpoint=endpoint,
                aliases=list(command.aliases),
                ip=command.ip,
            )
        )
        return endpoint

    @on(DisconnectNetwork)
    async def disconnect(self, command: DisconnectNetwork) -> None:
        container = await self.ctx.bus.request(ResolveContainer(ref=command.container))
        async with self._lock:
            network = self._network(command.network)
            remembered = network.name in container.connected
            if container.id in network.endpoints:
                await self._detach(network, container.id)
            elif not remembered:
                raise NotFound(
                    f'container "{container.name}" is not connected to network "{network.name}"'
                )
        await self.ctx.bus.request(
            SetContainerEndpoint(container_id=container.id, network=network.name, connected=False)
        )

    # --- service names ----------------------------------------------------------------------

    @on(SetServiceAddress)
    async def set_service_address(self, command: SetServiceAddress) -> None:
        """Answer `names` with `ip` on `network` (`ip` "" withdraws them); kept in the store."""
        try:
            address = str(IPv4Address(command.ip)) if command.ip else ""
        except ValueError:
            raise InvalidArgument(
                f'service address "{command.ip}" is not an IPv4 address'
            ) from None
        async with self._lock:
            network = self._network(command.network)
            names = dict(network.service_names)
            for name in command.names:
                if address:
                    names[name.lower()] = address
                else:
                    names.pop(name.lower(), None)
            if names != network.service_names:
                await self._save(msgspec.structs.replace(network, service_names=names))

    # --- overlay networks -------------------------------------------------------------------

    @on(ListOverlayEndpoints)
    async def overlay_endpoints(self, command: ListOverlayEndpoints) -> list[OverlayEndpoint]:
        return [
            endpoint
            for network in self._networks.values()
            if network.is_overlay
            for endpoint in _reported(network)
        ]

    @on(SetOverlayPeers)
    async def set_overlay_peers(self, command: SetOverlayPeers) -> None:
        """Program each local overlay network's VXLAN device with exactly its peers."""
        async with self._lock:
            self._peers = dict(command.peers)
            self._services = list(command.services)
            self._cluster_policies = dict(command.policies)
            for network in list(self._networks.values()):
                if network.is_overlay and network.bridge in self._bridges_up:
                    await self._program_peers(network)
            await self._program_services()
            await self._apply_rules()  # policies select containers of every node

    async def _on_link_thread(self, work: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(work, *args, limiter=self._limiter)

    def _overlays_up(self) -> dict[str, NetworkRecord]:
        return {
            n.name: n
            for n in self._networks.values()
            if n.is_overlay and n.bridge in self._bridges_up
        }

    async def _program_services(self) -> None:
        """The cluster's services on this node's overlay bridges: their VIPs on the bridges,
        and table ``<table>-ov`` balancing them to ready replicas on any node."""
        from carte.net import lb

        here, sources = balanced(self._services, self._overlays_up())
        vips = {(network.bridge, service.vip) for service, network in here}
        for bridge, vip in sorted(vips - self._service_vips):
            await self._on_link_thread(lb.assign_vip, bridge, IPv4Address(vip))
        for bridge, vip in sorted(self._service_vips - vips):
            await self._on_link_thread(lb.release_vip, bridge, IPv4Address(vip))
        self._service_vips = vips
        services = [
            lb.BalancedService(
                name=service.key,
                vip=IPv4Address(service.vip),
                ports=tuple(
                    lb.ServicePort(p.port, p.target_port, p.proto, p.published, p.host_ip)
                    for p in service.ports
                ),
                backends=tuple(IPv4Address(b) for b in service.backends),
            )
            for service, _ in here
        ]
        table = self.table + TABLE_SUFFIX
        script = lb.render(table, services, sources=sources, before=BEFORE) if services else ""
        if script == self._service_rules:
            return
        try:
            if script:
                await self._on_link_thread(lb.apply_script, script)
            else:
                await self._on_link_thread(lb.delete, table)
        except CarteError as error:
            self.ctx.log.error("overlay services not balanced: %s", error.message)
            self._service_rules = None
            return
        self._service_rules = script

    async def _program_peers(self, network: NetworkRecord) -> None:
        from carte.net.overlay import Peer

        wanted = {Peer(p.ip, p.mac, p.underlay) for p in self._peers.get(network.name, [])}
        name = _vxlan_name(network.bridge)
        added, removed = await self._vxlan(lambda o: o.sync_peers(name, wanted))
        if added or removed:
            self.ctx.log.info(
                "overlay %s: %d remote container(s) added, %d removed (%d known)",
                network.name,
                added,
                removed,
                len(wanted),
            )

    # --- policies ---------------------------------------------------------------------------

    @on(AddNetworkPolicy)
    async def add_policy(self, command: AddNetworkPolicy) -> NetworkPolicy:
        """Allow one flow; the network's first policy makes it default-deny between members."""
        policy = command.policy
        parse_selector(policy.from_label)
        parse_selector(policy.to_label)
        if not 0 <= policy.port <= 65535:
            raise InvalidArgument(f'port "{policy.port}" is not a port number 1-65535')
        async with self._lock:
            network = self._network(command.network)
            added = msgspec.structs.replace(policy, id=secrets.token_hex(6))
            updated = msgspec.structs.replace(network, policies=[*network.policies, added])
            await self._save(updated)
            try:
                await self._apply_rules()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._save(network)
                raise
        return added

    @on(ListNetworkPolicies)
    async def list_policies(self, command: ListNetworkPolicies) -> list[NetworkPolicy]:
        return list(self._network(command.network).policies)

    @on(RemoveNetworkPolicy)
    async def remove_policy(self, command: RemoveNetworkPolicy) -> None:
        async with self._lock:
            network = self._network(command.network)
            matches = [p for p in network.policies if p.id.startswith(command.id) and command.id]
            if len(matches) != 1:
                problem = "matches several policies" if matches else "is not a policy"
                raise NotFound(
                    f'policy "{command.id}" {problem} of network "{network.name}"; '
                    f"see carte network policy ls {network.name}"
                )
            kept = [p for p in network.policies if p is not matches[0]]
            await self._save(msgspec.structs.replace(network, policies=kept))
            await self._apply_rules()


def _link_exists(name: str) -> bool:
    """Without netlink (pyroute2 stays unloaded in an idle daemon)."""
    return Path("/sys/class/net", name).exists()


def _allocator(network: NetworkRecord, cursor: IPv4Address | None = None) -> AddressAllocator:
    """The addresses this node may hand out on `network`: an overlay's come from this
    node's slice only (the gateway, in the first slice, stays reserved); the next one after
    `cursor`, the last handed out."""
    used = (IPv4Address(e.ip) for e in network.endpoints.values())
    if not network.is_overlay:
        return AddressAllocator(network.subnet_net, network.gateway_ip, used, cursor=cursor)
    part = IPv4Network(network.slice)
    gateway = network.gateway_ip if network.gateway_ip in part else part.network_address
    return AddressAllocator(part, gateway, used, cursor=cursor)


def _reported(network: NetworkRecord) -> list[OverlayEndpoint]:
    from carte.net.links import bridge_mac  # imported already: the bridge exists

    return overlay_endpoints(network, bridge_mac(network.bridge))


def _vxlan_name(bridge: str) -> str:
    from carte.net.overlay import vxlan_name  # imported already by _open_links

    return vxlan_name(bridge)


def _open_overlay() -> OverlayLinks:
    from carte.net.overlay import OverlayLinks

    return OverlayLinks()


def _open_links() -> LinkControl:
    """Imports pyroute2 (~0.3 s), so it runs on a worker thread, not the event loop."""
    from carte.net.links import LinkControl

    return LinkControl()


def _forget_udp_flows(port: int) -> None:
    from carte.net import conntrack

    conntrack.forget_flows(port, "udp")


def _index_of(links: LinkControl, *, name: str) -> int | None:
    return links.index_of(name)


def _delete_link(links: LinkControl, *, name: str) -> bool:
    return links.delete_link(name)


def _order(network: NetworkRecord) -> tuple[bool, str]:
    return (not network.is_default, network.name)


def _host_veth(container_id: str, network: str) -> str:
    from carte.net.links import host_veth_name  # imported already by _open_links

    return host_veth_name(container_id, network)


async def _quietly(work: Any) -> None:
    try:
        await work
    except CarteError:
        pass
