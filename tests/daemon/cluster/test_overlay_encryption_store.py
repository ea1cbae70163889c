"""The encrypted overlay's cluster state, no daemon (an in-memory SQLite store, the control
plane's code): nodes publish WireGuard keys and get distinct tunnel addresses, an encrypted
network is refused to a node without a key before anything is written, a network in clear is
not turned encrypted by a later node, a rotation raises the generation, and the catalogue
sends an encrypted network's frames to the peers' tunnel addresses — never to a node that
has no tunnel. The kernel side is tested in a VM (test_overlay_encrypted_vm.py)."""

from __future__ import annotations

from ipaddress import IPv4Network
from types import SimpleNamespace

import pytest
import trio

from carte.api.cluster import NodeRecord
from carte.api.errors import Conflict, InvalidArgument, Unavailable
from carte.api.events.networks import OverlayEndpoint
from carte.engine.store import Store, open_sqlite_store
from carte.handlers.cluster._overlay import OverlayHandler
from carte.handlers.cluster._overlay_store import (
    NETWORKS,
    AllocateRequest,
    OverlayRecord,
    Rotation,
    Sources,
    TunnelRecord,
    TunnelRequest,
    allocate,
    catalogue,
    register_tunnel,
    rotate,
)
from carte.net.wireguard import generate_keypair

TUNNELS = IPv4Network("100.127.0.0/16")


async def _cluster(store: Store, *nodes: str) -> None:
    for i, node in enumerate(nodes, start=1):
        await store.put(
            f"cluster/members/{node}", NodeRecord(name=node, addresses=[f"192.0.2.{i}"])
        )


def _publish(node: str, generation: int = 0) -> TunnelRequest:
    key = generate_keypair().public_key
    return TunnelRequest(node=node, public_key=key, port=51820, generation=generation)


def _ask(node: str, *, encrypted: bool) -> AllocateRequest:
    return AllocateRequest(node=node, name="sec", subnet="10.9.0.0/24", encrypted=encrypted)


def test_keys_get_distinct_tunnel_addresses_and_bad_keys_are_refused() -> None:
    async def main() -> None:
        async with open_sqlite_store(":memory:") as store:
            await _cluster(store, "n1", "n2")
            first = await register_tunnel(store, _publish("n1"), TUNNELS)
            second = await register_tunnel(store, _publish("n2"), TUNNELS)
            again = await register_tunnel(store, _publish("n1", 1), TUNNELS)
            assert (first.address, second.address) == ("100.127.0.1", "100.127.0.2")
            assert again.address == first.address and again.public_key != first.public_key
            assert again.subnet == "100.127.0.0/16" and again.generation == 1
            bad = TunnelRequest(node="n2", public_key="bm90LWEta2V5", port=51820)
            with pytest.raises(InvalidArgument, match='node "n2"\'s public key'):
                await register_tunnel(store, bad, TUNNELS)

    trio.run(main)


def test_an_encrypted_network_needs_the_nodes_key_and_stays_encrypted() -> None:
    async def main() -> None:
        async with open_sqlite_store(":memory:") as store:
            await _cluster(store, "n1", "n2", "n3")
            with pytest.raises(Unavailable, match='node "n1" has published no WireGuard key'):
                await allocate(store, _ask("n1", encrypted=True), vnis=(10, 20), bits=3)
            assert await store.get(NETWORKS + "sec") is None, "nothing written when refused"
            tunnel = await register_tunnel(store, _publish("n1"), TUNNELS)
            spec = await allocate(store, _ask("n1", encrypted=True), vnis=(10, 20), bits=3)
            assert spec.encrypted and spec.underlay == tunnel.address
            await register_tunnel(store, _publish("n2"), TUNNELS)
            follower = await allocate(store, _ask("n2", encrypted=False), vnis=(10, 20), bits=3)
            assert follower.encrypted and follower.underlay == "100.127.0.2", "the record wins"
            with pytest.raises(Unavailable, match='node "n3" has published no WireGuard key'):
                await allocate(store, _ask("n3", encrypted=False), vnis=(10, 20), bits=3)
            clear = AllocateRequest(node="n1", name="clear", subnet="10.8.0.0/24")
            await allocate(store, clear, vnis=(10, 20), bits=3)
            later = AllocateRequest(node="n2", name="clear", subnet="10.8.0.0/24", encrypted=True)
            with pytest.raises(Conflict, match='"clear" spans the cluster unencrypted'):
                await allocate(store, later, vnis=(10, 20), bits=3)
            assert (await rotate(store)).generation == 1
            assert (await rotate(store)).generation == 2

    trio.run(main)


def test_an_encrypted_networks_frames_go_to_tunnel_addresses_only() -> None:
    def endpoint(node: str, network: str, ip: str) -> OverlayEndpoint:
        return OverlayEndpoint(
            node=node, container_id=ip, network=network, ip=ip, mac="02:42:0a:00:00:01"
        )

    def tunnel(address: str) -> TunnelRecord:
        return TunnelRecord(public_key="k" + address, port=51820, address=address)

    nodes = ["n1", "n2", "n3"]
    sec = OverlayRecord(
        name="sec", vni=10, subnet="10.1.0.0/24", gateway="10.1.0.1", encrypted=True
    )
    sources = Sources(
        members={n: NodeRecord(name=n, addresses=[f"192.0.2.{i}"]) for i, n in enumerate(nodes, 1)},
        endpoints={
            f"{net}/{n}": [endpoint(n, net, f"10.{i}.0.{j}")]
            for i, net in ((1, "sec"), (2, "clear"))
            for j, n in enumerate(nodes, 1)
        },
        overlays={"sec": sec},
        tunnels={n: tunnel(f"100.127.0.{i}") for i, n in ((1, "n1"), (2, "n2"), (9, "gone"))},
    )
    known = catalogue(sources)
    assert known.encrypted == ["sec"]
    assert sorted(known.tunnels) == ["n1", "n2"], "a removed node's tunnel is not a peer"
    assert known.tunnels["n2"].endpoint == "192.0.2.2", "WireGuard goes to the underlay"
    on_n1 = OverlayHandler.peers(SimpleNamespace(node="n1"), known)  # type: ignore[arg-type]
    assert {p.ip: p.underlay for p in on_n1["sec"]} == {"10.1.0.2": "100.127.0.2"}, (
        "n3 has no tunnel: its containers get no entry rather than traffic in clear"
    )
    assert {p.ip: p.underlay for p in on_n1["clear"]} == {
        "10.2.0.2": "192.0.2.2",
        "10.2.0.3": "192.0.2.3",
    }
    sources.rotation = {"": Rotation(generation=1)}
    rotated = catalogue(sources)
    assert rotated.rotation == 1 and rotated.version != known.version, "nodes see a rotation"
