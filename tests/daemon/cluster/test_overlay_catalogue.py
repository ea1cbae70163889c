"""The overlay's pure parts, no daemon: node slices of a subnet, the VNI range of carte.yaml,
driver options, and the catalogue every node programs from (a removed node's containers
go, a service balances to replicas ready by their agent or healthy by their node)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from carte.api.cluster import Assignment, NodeRecord, ReplicaStatus
from carte.api.errors import InvalidArgument
from carte.api.events.networks import OverlayEndpoint
from carte.handlers.cluster._overlay_store import (
    ServiceVip,
    Sources,
    catalogue,
    node_slice,
    vni_range,
)
from carte.handlers.network._overlay import encrypted_option


def test_node_slices_split_a_subnet_and_refuse_past_its_room() -> None:
    subnet = IPv4Network("10.9.0.0/24")
    assert [str(node_slice(subnet, 3, i)) for i in (0, 1, 7)] == [
        "10.9.0.0/27",
        "10.9.0.32/27",
        "10.9.0.224/27",
    ]
    with pytest.raises(InvalidArgument, match="has room for 8 node slice"):
        node_slice(subnet, 3, 8)
    assert str(node_slice(IPv4Network("10.9.0.0/30"), 3, 0)) == "10.9.0.0/30"


def test_vni_ranges_and_driver_options_are_checked() -> None:
    assert vni_range("4096-16777215") == (4096, 16777215)
    assert vni_range("7") == (7, 7)
    for bad in ("0-5", "9-3", "1-16777216", "a-b"):
        with pytest.raises(ValueError, match="not a range LOW-HIGH of VNIs"):
            vni_range(bad)
    assert encrypted_option("n", {"encrypted": ""}) is True
    assert encrypted_option("n", {"encrypted": "false"}) is False
    assert encrypted_option("n", {}) is False
    with pytest.raises(InvalidArgument, match='encrypted="maybe" is not true or false'):
        encrypted_option("n", {"encrypted": "maybe"})


def _endpoint(node: str, cid: str, ip: str, health: str = "") -> OverlayEndpoint:
    return OverlayEndpoint(
        node=node, container_id=cid, network="app_default", ip=ip, mac="02:42:00:00:00:01",
        health=health,
    )  # fmt: skip


def test_the_catalogue_keeps_members_and_balances_to_ready_replicas() -> None:
    def member(address: str) -> NodeRecord:
        return NodeRecord(name="x", addresses=[address])

    placed = {
        f"n{i}/app_web_{i}": Assignment(
            node=f"n{i}", stack="app", service="web", replica=i, name=f"app_web_{i}", revision="1"
        )
        for i in (1, 2, 3)
    }
    statuses = {
        "n1/app_web_1": ReplicaStatus(node="n1", name="app_web_1", container_id="c1",
                                      state="running", ready=True),
        "n2/app_web_2": ReplicaStatus(node="n2", name="app_web_2", container_id="c2",
                                      state="running", ready=True),
        "n3/app_web_3": ReplicaStatus(node="n3", name="app_web_3", container_id="c3",
                                      state="running", ready=False),
    }  # fmt: skip
    sources = Sources(
        members={"n1": member("192.0.2.1"), "n2": member("192.0.2.2")},  # n3 was removed
        endpoints={
            "app_default/n1": [_endpoint("n1", "c1", "10.9.0.2")],
            "app_default/n2": [_endpoint("n2", "c2", "10.9.0.34", health="unhealthy")],
            "app_default/n3": [_endpoint("n3", "c3", "10.9.0.66", health="healthy")],
        },
        vips={"app_web": ServiceVip(stack="app", service="web", network="app_default",
                                    vip="10.9.0.254")},
        assignments=placed,
        statuses=statuses,
    )  # fmt: skip
    known = catalogue(sources)
    assert known.nodes == {"n1": "192.0.2.1", "n2": "192.0.2.2"}
    assert [e.container_id for e in known.endpoints] == ["c1", "c2"], "n3's are gone"
    (service,) = known.services
    assert service.backends == ["10.9.0.2"], "c2 is unhealthy on its node; c3's node left"
    assert service.names == ["web", "web.app"]
    assert catalogue(sources).version == known.version, "the same content, the same version"
