"""Handler "overlay": networks that span the cluster's nodes (VXLAN, see carte/net/overlay.py).

Every node runs it; it idles outside a cluster. In a cluster:

* Allocation (`AllocateOverlay`, asked by the network handler when it creates a network):
  the network's VNI and subnet are cluster-wide, kept at ``overlay/networks/<name>`` with a
  slice of the subnet per node (`_overlay_store.allocate`). A control plane allocates in its
  store; a worker asks its control plane (``POST /v1/cluster/overlay/networks``).
* The endpoint catalogue: each node reports its own containers on overlay networks
  (`OverlayEndpointsChanged` from the network handler; the whole list per network) to
  ``overlay/endpoints/<network>/<node>``, and keeps reporting until the catalogue shows
  exactly them. A control plane follows the catalogue in its store (with the members'
  addresses); a worker long-polls ``GET /v1/cluster/overlay`` over mutual TLS, which answers
  as soon as the catalogue changes.
* On every catalogue change the node programs its VXLAN devices (`SetOverlayPeers` to the
  network handler) with every container of another node: its IP, MAC and the node's
  underlay address (`_overlay_store.underlay_address`, the one place that picks it).
  Containers of a removed node (no longer a member) are dropped from the catalogue, so their
  entries go on every node. The same command carries the cluster's services (VIP, ports,
  ready replicas' addresses): the network handler balances them on every node that has
  their network, and its DNS answers their names and the other nodes' container names.
  A replica that stops leaves its network at once, so its address leaves every node's
  balancing within one catalogue round-trip (readiness itself comes from the agents'
  status reports, every 2 s).

Encryption (networks created with ``-o encrypted=true``): every node whose kernel has
WireGuard keeps a key pair in its certificate directory (the private key never leaves it)
and publishes the public key, its port and a tunnel address from ``overlay.tunnel_subnet``
(``overlay/tunnels/<node>``). While a node holds an encrypted network it has one WireGuard
link (`carte.net.wireguard`) whose peers are the other nodes' tunnels, and that network's
VXLAN sends to the peers' *tunnel* addresses from its own, so every encapsulated frame
leaves the node inside WireGuard; a node with no published key gets no entries for an
encrypted network (never in clear), and the control plane refuses it the network.
``carte network rotate-keys`` raises the key generation in the store; each node then makes
a new pair, re-keys its link and publishes the new public key, and its peers follow at the
next catalogue change (traffic between two nodes pauses until both know the new keys).

Cut off from the control plane a worker keeps its last entries: traffic to the containers
it knew keeps flowing.
"""

from __future__ import annotations

import ssl
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import trio

from carte.api.cluster import Assignment, NodeRecord, ReplicaStatus
from carte.api.errors import CarteError, Conflict, Unavailable
from carte.api.events import (
    ClusterConfigured,
    CreateNetwork,
    GetClusterStatus,
    HealthChanged,
    ListNetworks,
    NetworkRemoved,
    RemoveNetwork,
)
from carte.api.events.networks import (
    AllocateOverlay,
    KeyRotation,
    ListOverlayEndpoints,
    OverlayEndpoint,
    OverlayEndpointsChanged,
    OverlayPeer,
    OverlaySpec,
    RotateOverlayKeys,
    SetOverlayPeers,
)
from carte.cluster.pki import Refused
from carte.engine import Handler, HandlerContext, on
from carte.engine.config import HandlerOptions
from carte.engine.store import Resync, Store, follow
from carte.handlers.cluster import _https
from carte.handlers.cluster._assignments import ASSIGNMENTS, STATUS
from carte.handlers.cluster._control import MEMBERS
from carte.handlers.cluster._failover import ControlPlanes
from carte.handlers.cluster._overlay_store import (
    ENDPOINTS,
    LONG_POLL,
    NETWORKS,
    OVERLAY_ROUTES,
    RECORDS,
    ROTATION,
    TUNNELS,
    VIPS,
    AllocateRequest,
    Catalogue,
    EndpointsReport,
    NetworkPolicies,
    OverlayRecord,
    ReleaseRequest,
    Rotation,
    ServiceVip,
    Sources,
    TunnelRecord,
    TunnelRequest,
    allocate,
    catalogue,
    register_tunnel,
    release,
    rotate,
    vni_range,
    write_endpoints,
)
from carte.handlers.cluster._tunnel import Tunnel
from carte.net import parse_subnet

INGRESS = "com.carte.overlay.ingress"
"""Label of a network made on a node only so its services' published ports answer there."""
_RETRY = 1.0
"""Seconds before a failed report, poll or programming pass is tried again."""
_RECHECK = 5.0
"""Seconds between checks that the catalogue shows this node's containers."""


class OverlayOptions(HandlerOptions, frozen=True, kw_only=True):
    """The ``overlay:`` section of carte.yaml (read on control planes)."""

    vnis: str = "4096-16777215"
    """VXLAN ids handed to overlay networks, LOW-HIGH."""
    slice_bits: int = 3
    """Each node hands out addresses from a 1/2**slice_bits part of a network's subnet
    (/30 at most), so a /24 serves 8 nodes with 29 addresses each."""
    tunnel_subnet: str = "100.127.0.0/16"
    """Where the nodes' WireGuard tunnel addresses come from (encrypted networks; read on
    control planes). Must not overlap a network the nodes use."""
    wireguard_port: int = 51820
    """The UDP port this node's WireGuard tunnel listens on."""

    def __post_init__(self) -> None:
        vni_range(self.vnis)
        if not 1 <= self.slice_bits <= 16:
            raise ValueError(f"slice_bits {self.slice_bits} is not within 1-16")
        try:
            parse_subnet(self.tunnel_subnet)
        except CarteError as error:
            raise ValueError(f"tunnel_subnet: {error.message}") from None
        if not 1 <= self.wireguard_port <= 65535:
            raise ValueError(f"wireguard_port {self.wireguard_port} is not within 1-65535")


class OverlayHandler(Handler):
    """Overlay networks across the cluster's nodes (see the module docstring)."""

    name = "overlay"
    requires = ("membership", "network")
    Options = OverlayOptions
    section = "overlay"
    routes = OVERLAY_ROUTES

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        options: OverlayOptions = ctx.options
        self.vnis = vni_range(options.vnis)
        self.bits = options.slice_bits
        self.tunnel_subnet = parse_subnet(options.tunnel_subnet)
        self.tunnel = Tunnel(self, options.wireguard_port)
        self.role = "none"
        self.node = ""
        self._configured: ClusterConfigured | None = None
        self._changed = trio.Event()
        self._catalogue = Catalogue()
        self._ready = trio.Event()
        self._news = trio.Event()
        self._program_wake = trio.Event()
        self._report_wake = trio.Event()
        self._local: dict[str, list[OverlayEndpoint]] = {}
        self._health: dict[str, str] = {}
        """The last `HealthChanged` of each local container."""
        self._line: _Line | None = None
        self._role_scope: trio.CancelScope | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Idle outside a cluster; serve the role while it lasts (a new one restarts it)."""
        task_status.started()
        while True:
            self._changed = trio.Event()
            configured = self._configured
            if configured is not None and configured.role in ("control", "worker"):
                with trio.CancelScope() as self._role_scope:
                    await self._serve_role(configured)
            await self._changed.wait()

    @on(ClusterConfigured)
    async def configured(self, fact: ClusterConfigured) -> None:
        self._configured = fact
        self.role, self.node = fact.role, fact.id
        if self._role_scope is not None:
            self._role_scope.cancel()
        self._changed.set()

    @on(OverlayEndpointsChanged)
    async def endpoints_changed(self, fact: OverlayEndpointsChanged) -> None:
        self._local[fact.network] = self._mine(fact.endpoints)
        self._report_wake.set()

    @on(HealthChanged)
    async def health_changed(self, fact: HealthChanged) -> None:
        """A local replica's health goes into its endpoints at once (see `OverlayEndpoint`)."""
        self._health[fact.id] = fact.status
        if any(e.container_id == fact.id for found in self._local.values() for e in found):
            self._local = {net: self._mine(found) for net, found in self._local.items()}
            self._report_wake.set()

    @on(NetworkRemoved)
    async def network_removed(self, fact: NetworkRemoved) -> None:
        """A network removed here gives its slice back; its VNI and subnet are free once
        the last node holding one removed it (see `_overlay_store.release`)."""
        self._local.pop(fact.id, None)
        if self.role not in ("control", "worker"):
            return
        asked = ReleaseRequest(node=self.node, network=fact.id)
        try:
            if self.role == "control":
                released = await release(self.ctx.store, asked)
            else:
                line = self._line or await self._open_line()
                answer = await line.call(
                    "POST", "/v1/cluster/overlay/release", msgspec.to_builtins(asked)
                )
                released = bool(isinstance(answer, dict) and answer.get("released"))
        except CarteError as error:  # its slice stays taken; the network is gone here
            self.ctx.log.warning("overlay slice not released", extra={"error": error})
            return
        if released:
            self.ctx.log.info("overlay released", extra={"network": fact.id})

    def _mine(self, endpoints: list[OverlayEndpoint]) -> list[OverlayEndpoint]:
        return sorted(
            msgspec.structs.replace(
                e, node=self.node, health=self._health.get(e.container_id, e.health)
            )
            for e in endpoints
        )

    # --- allocation -------------------------------------------------------------------------

    @on(AllocateOverlay)
    async def allocate_overlay(self, command: AllocateOverlay) -> OverlaySpec | None:
        if self.role not in ("control", "worker"):
            return None
        asked = AllocateRequest(
            node=self.node,
            name=command.name,
            subnet=command.subnet,
            asked=command.asked,
            alternatives=command.alternatives,
            encrypted=command.encrypted,
        )
        if self.role == "control":
            spec = await self.allocate_here(asked)
        else:
            line = self._line or await self._open_line()
            body = msgspec.to_builtins(asked)
            answer = await line.call("POST", "/v1/cluster/overlay/networks", body)
            spec = msgspec.convert(answer, OverlaySpec)
        if spec.encrypted:
            try:  # the VXLAN device's local address is the tunnel's: the link comes first
                await self.tunnel.ensure()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self.network_removed(NetworkRemoved(id=command.name))
                raise
        return spec

    async def allocate_here(self, asked: AllocateRequest) -> OverlaySpec:
        spec = await allocate(self.control_store(), asked, vnis=self.vnis, bits=self.bits)
        self.ctx.log.info(
            "overlay slice",
            extra={"network": asked.name, "node": asked.node, "vni": spec.vni, "slice": spec.slice},
        )
        return spec

    async def register_here(self, asked: TunnelRequest) -> TunnelRecord:
        return await register_tunnel(self.control_store(), asked, self.tunnel_subnet)

    @on(RotateOverlayKeys)
    async def rotate_keys(self, command: RotateOverlayKeys) -> KeyRotation:
        """Raise the key generation; wait (up to `timeout`) until the nodes published keys
        of it."""
        if self.role == "control":
            raised = await rotate(self.ctx.store)
        elif self.role == "worker":
            line = self._line or await self._open_line()
            answer = await line.call("POST", f"/v1/cluster/overlay/rotate?node={quote(self.node)}")
            raised = msgspec.convert(answer, Rotation)
        else:
            raise Conflict(
                "this daemon is not in a cluster: encrypted networks are carried between a "
                "cluster's nodes (carte cluster init, carte node join)"
            )
        generation = raised.generation

        def behind(known: Catalogue) -> list[str]:
            return sorted(n for n, t in known.tunnels.items() if t.generation < generation)

        with trio.move_on_after(command.timeout):
            while behind(await self.current()):
                await self.news()
        known = self._catalogue
        return KeyRotation(
            generation=generation,
            rotated=sorted(n for n, t in known.tunnels.items() if t.generation >= generation),
            pending=behind(known),
        )

    def control_store(self) -> Store:
        if self.role != "control":
            raise Conflict(f'this daemon is not a control plane (role "{self.role}")')
        return self.ctx.store

    # --- the catalogue ----------------------------------------------------------------------

    async def current(self) -> Catalogue:
        """The catalogue, once it was read."""
        await self._ready.wait()
        return self._catalogue

    async def news(self) -> None:
        """Return at the next change of the catalogue."""
        await self._news.wait()

    def _take(self, fresh: Catalogue) -> None:
        self._ready.set()
        if fresh.version == self._catalogue.version:
            return
        self._catalogue = fresh
        news, self._news = self._news, trio.Event()
        news.set()
        self._program_wake.set()
        self._report_wake.set()

    async def _serve_role(self, configured: ClusterConfigured) -> None:
        self._catalogue, self._ready, self._line = Catalogue(), trio.Event(), None
        self._local = defaultdict(list)
        for endpoint in await self.ctx.bus.request(ListOverlayEndpoints()):
            self._local[endpoint.network].append(endpoint)
        self._local = {net: self._mine(found) for net, found in self._local.items()}
        async with trio.open_nursery() as nursery:
            if configured.role == "control":
                nursery.start_soon(self._follow_store)
            else:
                nursery.start_soon(self._poll, await self._open_line())
            nursery.start_soon(self._program_forever)
            nursery.start_soon(self._report_forever)
            nursery.start_soon(self._tunnel_while_serving)

    async def _tunnel_while_serving(self) -> None:
        """The tunnel's keys for the role's time; its link goes with the role."""
        try:
            await self.tunnel.serve()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.tunnel.remove()
                except CarteError as error:
                    self.ctx.log.warning("WireGuard tunnel not removed", extra={"error": error})

    async def _follow_store(self) -> None:
        """A control plane: the catalogue from the members, endpoints, service VIPs and
        replicas in its store."""
        sources = Sources()
        tables: list[tuple[str, dict[str, Any], Any]] = [
            (MEMBERS, sources.members, NodeRecord),
            (ENDPOINTS, sources.endpoints, list[OverlayEndpoint]),
            (VIPS, sources.vips, ServiceVip),
            (ASSIGNMENTS, sources.assignments, Assignment),
            (STATUS, sources.statuses, ReplicaStatus),
            (RECORDS, sources.networks, NetworkPolicies),
            (NETWORKS, sources.overlays, OverlayRecord),
            (TUNNELS, sources.tunnels, TunnelRecord),
            (ROTATION, sources.rotation, Rotation),
        ]
        synced: set[str] = set()

        async def watch(prefix: str, table: dict[str, Any], kind: Any) -> None:
            async with follow(self.ctx.store, prefix) as changes:
                async for item in changes:
                    if isinstance(item, Resync):
                        table.clear()
                        for entry in item.entries:
                            table[entry.key.removeprefix(prefix)] = entry.decode(kind)
                        synced.add(prefix)
                    elif item.value is None:
                        table.pop(item.key.removeprefix(prefix), None)
                    else:
                        value = msgspec.json.decode(item.value, type=kind)
                        table[item.key.removeprefix(prefix)] = value
                    if len(synced) == len(tables):
                        self._take(catalogue(sources))

        async with trio.open_nursery() as nursery:
            for prefix, table, kind in tables:
                nursery.start_soon(watch, prefix, table, kind)

    async def _open_line(self) -> _Line:
        status = await self.ctx.bus.request(GetClusterStatus())
        assert self._configured is not None
        self._line = _Line(ControlPlanes(status.servers), self._configured.certs)
        return self._line

    async def _poll(self, line: _Line) -> None:
        """A worker: the catalogue from the control plane, at each change (long poll)."""
        failing = ""
        while True:
            try:
                version = quote(self._catalogue.version)
                target = f"/v1/cluster/overlay?node={quote(self.node)}&seen={version}"
                answer = await line.call("GET", target)
                self._take(msgspec.convert(answer, Catalogue))
                failing = ""
            except (Unavailable, Refused, Conflict) as error:
                if str(error) != failing:
                    self.ctx.log.warning(
                        "overlay catalogue not read; keeping the last entries",
                        extra={"error": str(error)},
                    )
                failing = str(error)
                await trio.sleep(_RETRY)

    # --- programming and reporting ----------------------------------------------------------

    def peers(self, known: Catalogue) -> dict[str, list[OverlayPeer]]:
        """Per network, the containers of other nodes and where their frames go."""
        found: dict[str, list[OverlayPeer]] = defaultdict(list)
        encrypted = set(known.encrypted)
        for e in known.endpoints:
            if e.node != self.node:
                underlay = known.nodes[e.node]
                if e.network in encrypted:  # through its tunnel, or not at all
                    tunnel = known.tunnels.get(e.node)
                    if tunnel is None:
                        continue
                    underlay = tunnel.address
                peer = OverlayPeer(
                    ip=e.ip,
                    mac=e.mac,
                    underlay=underlay,
                    names=e.names,
                    name=e.name,
                    labels=e.labels,
                )
                found[e.network].append(peer)
        return dict(found)

    async def _program_forever(self) -> None:
        await self._ready.wait()
        programmed = None
        while True:
            self._program_wake = trio.Event()
            known = self._catalogue
            if known.version != programmed:
                await self._ensure_ingress(known)
                try:
                    await self._settle_tunnel(known)
                    wanted = SetOverlayPeers(
                        peers=self.peers(known), services=known.services, policies=known.policies
                    )
                    await self.ctx.bus.request(wanted)
                    programmed = known.version
                except CarteError as error:
                    self.ctx.log.warning("overlay entries not programmed", extra={"error": error})
                    await trio.sleep(_RETRY)
                    continue
            await self._program_wake.wait()

    async def _settle_tunnel(self, known: Catalogue) -> None:
        """The tunnel link while this node holds an encrypted network (peers: every other
        node's tunnel), none otherwise."""
        here = {n.name for n in await self.ctx.bus.request(ListNetworks()) if n.encrypted}
        if here & set(known.encrypted) and self.tunnel.supported:
            await self.tunnel.ensure()
            await self.tunnel.set_peers(known)
        elif not here:
            await self.tunnel.remove()

    async def _ensure_ingress(self, known: Catalogue) -> None:
        """The routing mesh: the network of every service that publishes a port exists on
        this node (made when missing), so the port answers here whether or not a replica
        runs here; a network made for that goes again once no such service is left."""
        wanted = {s.network for s in known.services if any(p.published for p in s.ports)}
        try:
            networks = {n.name: n for n in await self.ctx.bus.request(ListNetworks())}
            for name in sorted(wanted - set(networks)):
                await self.ctx.bus.request(CreateNetwork(name=name, labels={INGRESS: "true"}))
                self.ctx.log.info("network made for published ports", extra={"network": name})
            for name, network in sorted(networks.items()):
                if name not in wanted and network.labels.get(INGRESS) and not network.containers:
                    await self.ctx.bus.request(RemoveNetwork(name=name))
        except CarteError as error:  # tried again at the next change
            self.ctx.log.warning("routing mesh networks not settled", extra={"error": error})

    async def _report_forever(self) -> None:
        """Report this node's containers until the catalogue shows exactly them."""
        await self._ready.wait()
        while True:
            self._report_wake = trio.Event()
            try:
                await self._report_differences()
            except (CarteError, trio.TooSlowError) as error:
                self.ctx.log.info("overlay endpoints not reported yet", extra={"error": error})
                await trio.sleep(_RETRY)
                continue
            with trio.move_on_after(_RECHECK):
                await self._report_wake.wait()

    async def _report_differences(self) -> None:
        shown: dict[str, list[OverlayEndpoint]] = defaultdict(list)
        for e in self._catalogue.endpoints:
            if e.node == self.node:
                shown[e.network].append(e)
        for network in sorted(set(shown) | set(self._local)):
            mine = self._local.get(network, [])
            if sorted(shown.get(network, [])) == mine:
                continue
            report = EndpointsReport(node=self.node, network=network, endpoints=mine)
            if self.role == "control":
                await write_endpoints(self.ctx.store, report)
            else:
                line = self._line or await self._open_line()
                with trio.fail_after(10):
                    await line.call(
                        "POST", "/v1/cluster/overlay/endpoints", msgspec.to_builtins(report)
                    )


class _Line:
    """A worker's requests to its control plane (mutual TLS, the node's certificate)."""

    def __init__(self, planes: ControlPlanes, certs: str) -> None:
        self.planes = planes  # the control plane in use first, the others to fail over to
        self.certs = Path(certs)
        self._context: ssl.SSLContext | None = None

    async def call(self, method: str, path: str, body: object = None) -> object:
        if self._context is None:
            ca = (self.certs / "ca.pem").read_bytes()
            self._context = _https.pinned_context(ca, self.certs)
        try:
            with trio.fail_after(LONG_POLL + 5):
                return await self.planes.call(self._context, method, path, body)
        except trio.TooSlowError:
            raise Unavailable(
                f"the control plane at {self.planes.current} did not answer {path}"
            ) from None
