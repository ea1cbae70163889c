"""The overlay's cluster-wide state (control plane, etcd) and its routes for worker nodes.

Keys:

* ``overlay/networks/<name>`` (`OverlayRecord`): the network's VNI, subnet and gateway, and
  the slice index of each node that made it (``node_slice``), so nodes hand out addresses
  from disjoint parts of one subnet.
* ``overlay/endpoints/<network>/<node>`` (a list of `OverlayEndpoint`): the containers a node
  runs on that network (one key per node and network, written whole by that node).
* ``overlay/tunnels/<node>`` (`TunnelRecord`): a node's WireGuard public key, port and tunnel
  address (from ``overlay.tunnel_subnet``), published by nodes whose kernel can encrypt; the
  private key never leaves the node. ``overlay/rotation`` (`Rotation`): the key generation
  every node should be at (`carte network rotate-keys` raises it).

The endpoint catalogue (`Catalogue`) is those endpoints plus every member's underlay address
(``cluster/members/``) and the cluster's services: each VIP the services handler of the
control plane allocated (``services/``) with the addresses of its service's ready replicas
on any node (``cluster/assignments/`` and ``cluster/status/`` say which containers those
are, the endpoints where they are). Its ``version`` is a digest of its content, so a
heartbeat that only moves a node's "seen" time is no change.

Routes (TCP, mutual TLS; a node certificate speaks only for its own node):

* ``GET /v1/cluster/overlay?node=N&seen=V`` — the catalogue, at once when its version is not
  ``V``, else as soon as it changes (a long poll, at most ``LONG_POLL`` seconds): one watch
  round-trip from a change in the store to every worker.
* ``POST /v1/cluster/overlay/networks`` — `AllocateRequest` -> `OverlaySpec` (the network's
  overlay, allocated when new, with the asking node's slice).
* ``POST /v1/cluster/overlay/endpoints`` — `EndpointsReport`: a node's containers on one
  network (an empty list removes the key).
* ``POST /v1/cluster/overlay/release`` — `ReleaseRequest`: a node removed a network (its
  slice goes; the overlay with the last one).
* ``POST /v1/cluster/overlay/tunnel`` — `TunnelRequest` -> `TunnelRecord`: a node publishes
  its public key (its tunnel address is allocated the first time).
* ``POST /v1/cluster/overlay/rotate`` — the key generation raised by one -> `Rotation`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Response, request

from carte.api.cluster import Assignment, NodeRecord, ReplicaStatus
from carte.api.errors import Conflict, InvalidArgument, NotFound, Unavailable
from carte.api.events.networks import OverlayEndpoint, OverlayPort, OverlayService, OverlaySpec
from carte.api.networks import NetworkPolicy
from carte.engine.handler import Route
from carte.engine.store import Delete, Entry, Store
from carte.handlers.cluster._assignments import _check_peer, asking_node
from carte.handlers.cluster._control import MEMBERS
from carte.handlers.cluster._routes import _body, _reply
from carte.net import default_gateway, parse_subnet

if TYPE_CHECKING:
    from carte.handlers.cluster._overlay import OverlayHandler

NETWORKS = "overlay/networks/"
ENDPOINTS = "overlay/endpoints/"
TUNNELS = "overlay/tunnels/"
TUNNEL_ADDRESSES = "overlay/tunnel-addresses"
"""Node name -> its tunnel address (one map, changed by compare-and-swap)."""
ROTATION = "overlay/rotation"
VIPS = "services/"
"""The services handler's VIP records (read only)."""
RECORDS = "networks/"
"""The network handler's records (read only: their policies)."""
LONG_POLL = 10.0
"""Seconds a catalogue request waits for a change before answering with the same one."""
_CAS_ATTEMPTS = 8
_encoder = msgspec.json.Encoder()


class OverlayRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    vni: int
    subnet: str
    gateway: str
    slices: dict[str, int] = {}
    """Node name -> index of its slice of `subnet`."""
    encrypted: bool = False
    """Node-to-node traffic goes through the nodes' WireGuard tunnels."""


class TunnelRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A node's WireGuard tunnel as its peers must know it."""

    public_key: str
    port: int
    address: str
    """The tunnel link's address (encrypted overlays' VXLAN traffic goes to it)."""
    subnet: str = ""
    """The tunnel subnet the address is from (the link's prefix)."""
    generation: int = 0
    """The key generation (`Rotation`) this key was made for."""


class Rotation(msgspec.Struct, frozen=True, kw_only=True):
    generation: int = 0


class TunnelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    node: str
    public_key: str
    port: int
    generation: int = 0


class TunnelPeer(TunnelRecord, frozen=True, kw_only=True):
    """Another node's tunnel, with the underlay address its WireGuard packets go to."""

    endpoint: str


class Catalogue(msgspec.Struct, frozen=True, kw_only=True):
    version: str = ""
    nodes: dict[str, str] = {}
    """Node name -> the underlay address its VXLAN traffic goes to."""
    endpoints: list[OverlayEndpoint] = []
    services: list[OverlayService] = []
    policies: dict[str, list[NetworkPolicy]] = {}
    """Overlay network name -> its policies on the control plane."""
    tunnels: dict[str, TunnelPeer] = {}
    """Node name -> its WireGuard tunnel (nodes that published one)."""
    encrypted: list[str] = []
    """The overlay networks whose traffic goes through the tunnels."""
    rotation: int = 0
    """The key generation every node should be at."""


class NetworkPolicies(msgspec.Struct, frozen=True, kw_only=True):
    """What the catalogue reads of the control plane's network records (``networks/``)."""

    vni: int = 0
    policies: list[NetworkPolicy] = []


class ServiceVip(msgspec.Struct, frozen=True, kw_only=True):
    """What the catalogue reads of a service's VIP (``services/<stack>_<service>``, written
    by the services handler of the control plane that applied the stack)."""

    stack: str
    service: str
    network: str
    vip: str
    ports: list[OverlayPort] = []


class Sources(msgspec.Struct, kw_only=True):
    """What the control plane's catalogue is made of (keys without their prefix)."""

    members: dict[str, NodeRecord] = {}
    endpoints: dict[str, list[OverlayEndpoint]] = {}
    vips: dict[str, ServiceVip] = {}
    assignments: dict[str, Assignment] = {}
    """``<node>/<name>`` -> the replica placed there."""
    statuses: dict[str, ReplicaStatus] = {}
    """``<node>/<name>`` -> how its agent reports it."""
    networks: dict[str, NetworkPolicies] = {}
    overlays: dict[str, OverlayRecord] = {}
    tunnels: dict[str, TunnelRecord] = {}
    rotation: dict[str, Rotation] = {}
    """``""`` -> the rotation record, when there is one."""


class AllocateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    node: str
    name: str
    subnet: str
    asked: bool = False
    alternatives: list[str] = []
    encrypted: bool = False


class ReleaseRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    node: str
    network: str


class EndpointsReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    node: str
    network: str
    endpoints: list[OverlayEndpoint] = []


# --- pure parts ---------------------------------------------------------------------------


def underlay_address(node: NodeRecord) -> str:
    """Where VXLAN traffic for ``node`` goes: its first cluster address. The one place an
    encryption layer substitutes a tunnel's address."""
    return node.addresses[0] if node.addresses else ""


def slice_prefix(subnet: IPv4Network, bits: int) -> int:
    """The prefix length of the node slices of ``subnet``: ``bits`` longer, /30 at most."""
    return min(subnet.prefixlen + bits, 30)


def node_slice(subnet: IPv4Network, bits: int, index: int) -> IPv4Network:
    """The ``index``-th node slice of ``subnet``; InvalidArgument when there is none."""
    prefix = max(slice_prefix(subnet, bits), subnet.prefixlen)
    count = 1 << (prefix - subnet.prefixlen)
    if not 0 <= index < count:
        raise InvalidArgument(
            f"overlay subnet {subnet} has room for {count} node slice(s) of /{prefix} and "
            f"{index + 1} nodes need one; give the network a larger subnet"
        )
    return IPv4Network((int(subnet.network_address) + (index << (32 - prefix)), prefix))


def vni_range(vnis: str) -> tuple[int, int]:
    """``"LOW-HIGH"`` as a range of VNIs (1-16777215); ValueError naming it."""
    low, _, high = vnis.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        first = last = -1
    if not 1 <= first <= last <= 0xFFFFFF:
        raise ValueError(f'"{vnis}" is not a range LOW-HIGH of VNIs within 1-16777215')
    return first, last


def catalogue(sources: Sources) -> Catalogue:
    """The endpoints of nodes that are still members (a removed node's go) and the
    services with their ready replicas' addresses."""
    nodes = {name: underlay_address(node) for name, node in sorted(sources.members.items())}
    nodes = {name: address for name, address in nodes.items() if address}
    kept = sorted(
        (e for found in sources.endpoints.values() for e in found if e.node in nodes),
        key=lambda e: (e.network, e.node, e.ip),
    )
    services = balanced_services(sources, kept)
    policies = {
        name: network.policies
        for name, network in sorted(sources.networks.items())
        if network.vni and network.policies
    }
    tunnels = {
        name: TunnelPeer(endpoint=nodes[name], **msgspec.structs.asdict(tunnel))
        for name, tunnel in sorted(sources.tunnels.items())
        if name in nodes
    }
    encrypted = sorted(name for name, record in sources.overlays.items() if record.encrypted)
    rotation = sources.rotation[""].generation if "" in sources.rotation else 0
    content = [nodes, kept, services, policies, tunnels, encrypted, rotation]
    digest = hashlib.sha256(_encoder.encode(content)).hexdigest()
    return Catalogue(
        version=digest[:16],
        nodes=nodes,
        endpoints=kept,
        services=services,
        policies=policies,
        tunnels=tunnels,
        encrypted=encrypted,
        rotation=rotation,
    )


def balanced_services(sources: Sources, endpoints: list[OverlayEndpoint]) -> list[OverlayService]:
    """Every VIP with the addresses, on its network, of its service's ready replicas."""
    health = {e.container_id: e.health for e in endpoints if e.container_id}
    replicas: dict[str, set[str]] = defaultdict(set)
    ready: dict[str, set[str]] = defaultdict(set)
    for key, status in sources.statuses.items():
        placed = sources.assignments.get(key)
        if placed is None or not status.container_id:
            continue
        replicas[f"{placed.stack}_{placed.service}"].add(status.container_id)
        verdict = health.get(status.container_id, "")  # the node's own, fresher than status
        if verdict == "healthy" or (verdict in ("", "none") and status.ready):
            if status.state == "running":
                ready[f"{placed.stack}_{placed.service}"].add(status.container_id)
    return [
        OverlayService(
            key=key,
            stack=vip.stack,
            network=vip.network,
            vip=vip.vip,
            networks=sorted({e.network for e in endpoints if e.container_id in replicas[key]}),
            names=[vip.service, f"{vip.service}.{vip.stack}"],
            ports=vip.ports,
            backends=sorted(
                e.ip for e in endpoints if e.network == vip.network and e.container_id in ready[key]
            ),
        )
        for key, vip in sorted(sources.vips.items())
    ]


# --- the store ----------------------------------------------------------------------------


async def allocate(
    store: Store, asked: AllocateRequest, *, vnis: tuple[int, int], bits: int
) -> OverlaySpec:
    """The overlay of network ``asked.name`` for ``asked.node``: made (a free VNI, the
    proposed subnet) when new, the node's slice added when it has none (compare-and-swap)."""
    member = await store.get(f"cluster/members/{asked.node}")
    if member is None:
        raise NotFound(f'node "{asked.node}" is not a member of the cluster')
    underlay = underlay_address(member.decode(NodeRecord))
    key = NETWORKS + asked.name
    for _ in range(_CAS_ATTEMPTS):
        entry = await store.get(key)
        if entry is None:
            record, revision = await _new_record(store, asked, vnis), 0
        else:
            record, revision = entry.decode(OverlayRecord), entry.revision
            if asked.asked and asked.subnet != record.subnet:
                raise Conflict(
                    f'network "{asked.name}" spans the cluster with subnet {record.subnet}; '
                    "create it with that subnet or none"
                )
            if asked.encrypted and not record.encrypted:
                raise Conflict(
                    f'network "{asked.name}" spans the cluster unencrypted; remove it from '
                    "every node first, or create it here without encrypted"
                )
        if record.encrypted:
            underlay = await _tunnel_address(store, asked)
        subnet = IPv4Network(record.subnet)
        index = record.slices.get(asked.node)
        if index is None:
            members = await _members(store)  # a removed node's slice is free again
            used = {i for n, i in record.slices.items() if n in members}
            index = next(i for i in range(len(used) + 1) if i not in used)
            node_slice(subnet, bits, index)  # refused when the subnet has no room left
            slices = {n: i for n, i in record.slices.items() if n in members}
            record = msgspec.structs.replace(record, slices={**slices, asked.node: index})
            try:
                await store.cas(key, record, revision)
            except Conflict:
                continue  # another node allocated meanwhile: read again
        return OverlaySpec(
            vni=record.vni,
            subnet=record.subnet,
            gateway=record.gateway,
            slice=str(node_slice(subnet, bits, index)),
            underlay=underlay,
            encrypted=record.encrypted,
        )
    raise Conflict(f'network "{asked.name}": too many nodes allocating at once; try again')


async def _tunnel_address(store: Store, asked: AllocateRequest) -> str:
    """The node's tunnel address, for an encrypted network: refused (before anything is
    written) when the node published no WireGuard key, so nothing goes in clear."""
    entry = await store.get(TUNNELS + asked.node)
    if entry is None:
        raise Unavailable(
            f'network "{asked.name}" is encrypted and node "{asked.node}" has published no '
            "WireGuard key (its kernel cannot encrypt: see carte system check there); "
            "load the wireguard module on that node and restart its daemon"
        )
    return entry.decode(TunnelRecord).address


async def register_tunnel(store: Store, asked: TunnelRequest, subnet: IPv4Network) -> TunnelRecord:
    """Publish node ``asked.node``'s public key; its tunnel address is the one it had, or the
    first address of ``subnet`` no member's tunnel holds (compare-and-swap on the map)."""
    from carte.net.wireguard import check_key  # pyroute2's WireGuard only where used

    check_key(asked.public_key, f'node "{asked.node}"\'s public key')
    for _ in range(_CAS_ATTEMPTS):
        entry = await store.get(TUNNEL_ADDRESSES)
        held: dict[str, str] = entry.decode(dict[str, str]) if entry else {}
        address = held.get(asked.node)
        if address is None:
            members = await _members(store)
            taken = {a for n, a in held.items() if n in members}
            hosts = (str(h) for h in subnet.hosts())
            address = next((h for h in hosts if h not in taken), "")
            if not address:
                raise Conflict(
                    f"overlay.tunnel_subnet {subnet} has no address left for node "
                    f'"{asked.node}"; widen it in carte.yaml'
                )
            kept = {n: a for n, a in held.items() if n in members}
            try:
                await store.cas(TUNNEL_ADDRESSES, {**kept, asked.node: address}, _revision(entry))
            except Conflict:
                continue  # another node took one meanwhile: read again
        record = TunnelRecord(
            public_key=asked.public_key,
            port=asked.port,
            address=address,
            subnet=str(subnet),
            generation=asked.generation,
        )
        await store.put(TUNNELS + asked.node, record)
        return record
    raise Conflict(f'node "{asked.node}": too many nodes publishing keys at once; try again')


async def rotate(store: Store) -> Rotation:
    """Raise the key generation by one: every node makes a new key pair and publishes it."""
    for _ in range(_CAS_ATTEMPTS):
        entry = await store.get(ROTATION)
        current = entry.decode(Rotation) if entry else Rotation()
        raised = Rotation(generation=current.generation + 1)
        try:
            await store.cas(ROTATION, raised, _revision(entry))
        except Conflict:
            continue
        return raised
    raise Conflict("the keys are being rotated by someone else at the same time; try again")


def _revision(entry: Entry | None) -> int:
    return entry.revision if entry is not None else 0


async def _new_record(store: Store, asked: AllocateRequest, vnis: tuple[int, int]) -> OverlayRecord:
    """A new overlay: a free VNI and the first proposed subnet no other overlay overlaps
    (only the one asked for when the user gave it)."""
    records = [e.decode(OverlayRecord) for e in await store.list(NETWORKS)]
    proposed = [asked.subnet] if asked.asked else [asked.subnet, *asked.alternatives]
    for text in proposed:
        subnet = parse_subnet(text)
        other = next((r for r in records if IPv4Network(r.subnet).overlaps(subnet)), None)
        if other is None:
            break
    else:
        assert other is not None
        raise Conflict(
            f"subnet {asked.subnet} overlaps overlay network {other.name} ({other.subnet}); "
            "choose another subnet"
        )
    taken = {r.vni for r in records}
    first, last = vnis
    vni = next((v for v in range(first, last + 1) if v not in taken), 0)
    if not vni:
        raise Conflict(
            f"no free VNI in overlay.vnis {first}-{last} ({len(taken)} overlay networks); "
            "remove a network or widen overlay.vnis in carte.yaml"
        )
    return OverlayRecord(
        name=asked.name,
        vni=vni,
        subnet=str(subnet),
        gateway=str(default_gateway(subnet)),
        encrypted=asked.encrypted,
    )


async def write_endpoints(store: Store, report: EndpointsReport) -> None:
    key = f"{ENDPOINTS}{report.network}/{report.node}"
    mine = [msgspec.structs.replace(e, node=report.node) for e in report.endpoints]
    if mine:
        await store.put(key, mine)
    else:
        await store.delete(key)


async def release(store: Store, asked: ReleaseRequest) -> bool:
    """Node ``asked.node`` removed network ``asked.network``: its slice and endpoints go,
    and the overlay itself (its VNI and subnet) once no member node holds a slice, so a
    VNI is never handed to a new network while a node still uses it; whether it went."""
    await store.delete(f"{ENDPOINTS}{asked.network}/{asked.node}")
    key = NETWORKS + asked.network
    for _ in range(_CAS_ATTEMPTS):
        entry = await store.get(key)
        if entry is None:
            return False
        record = entry.decode(OverlayRecord)
        members = await _members(store)
        slices = {n: i for n, i in record.slices.items() if n in members and n != asked.node}
        try:
            if slices:
                await store.cas(key, msgspec.structs.replace(record, slices=slices), entry.revision)
                return False
            await store.txn([Delete(key)], expect={key: entry.revision})
        except Conflict:
            continue  # a node allocated meanwhile: read again
        for left in await store.list(f"{ENDPOINTS}{asked.network}/"):
            await store.delete(left.key)  # of removed nodes
        return True
    raise Conflict(f'network "{asked.network}": too many nodes changing it at once; try again')


async def _members(store: Store) -> set[str]:
    return {e.key.removeprefix(MEMBERS) for e in await store.list(MEMBERS)}


# --- routes -------------------------------------------------------------------------------


async def serve_catalogue(handler: OverlayHandler) -> Response:
    asking_node()
    handler.control_store()
    seen = request.args.get("seen", "")
    with trio.move_on_after(LONG_POLL):
        while (await handler.current()).version == seen:
            await handler.news()
    return _reply(await handler.current())


async def serve_allocate(handler: OverlayHandler) -> Response:
    asked: AllocateRequest = await _body(AllocateRequest)
    _check_peer(asked.node)
    return _reply(await handler.allocate_here(asked))


async def serve_release(handler: OverlayHandler) -> Response:
    asked: ReleaseRequest = await _body(ReleaseRequest)
    _check_peer(asked.node)
    return _reply({"released": await release(handler.control_store(), asked)})


async def serve_endpoints(handler: OverlayHandler) -> Response:
    report: EndpointsReport = await _body(EndpointsReport)
    _check_peer(report.node)
    await write_endpoints(handler.control_store(), report)
    return _reply({})


async def serve_tunnel(handler: OverlayHandler) -> Response:
    asked: TunnelRequest = await _body(TunnelRequest)
    _check_peer(asked.node)
    return _reply(await handler.register_here(asked))


async def serve_rotate(handler: OverlayHandler) -> Response:
    asking_node()
    return _reply(await rotate(handler.control_store()))


OVERLAY_ROUTES = (
    Route("GET", "/v1/cluster/overlay", serve_catalogue, streams=True),
    Route("POST", "/v1/cluster/overlay/networks", serve_allocate),
    Route("POST", "/v1/cluster/overlay/endpoints", serve_endpoints),
    Route("POST", "/v1/cluster/overlay/release", serve_release),
    Route("POST", "/v1/cluster/overlay/tunnel", serve_tunnel),
    Route("POST", "/v1/cluster/overlay/rotate", serve_rotate),
)
