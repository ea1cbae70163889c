"""Overlay networks: one kernel VXLAN device per network on each node, bridged with the
network's containers, programmed with static entries only (synchronous, pyroute2).

Each overlay network has one VNI (cluster-wide) and, on every node running one of its
containers, a bridge whose extra port is a VXLAN device made with ``nolearning`` and
``proxy``: the kernel neither learns remote MACs from traffic nor floods unknown ones. For
every container on another node, the node gets two entries on its VXLAN device:

* an FDB entry ``MAC dst UNDERLAY self permanent`` (frames for that MAC are sent to that
  node's underlay address, UDP 4789);
* a neighbour entry ``IP lladdr MAC permanent``, which the device answers ARP requests from
  (proxy ARP), so an ARP broadcast never leaves the node.

`sync_peers` makes a device's entries exactly a given set (adds what is missing, deletes the
rest), so a peer that left loses its entries on the next call. The MTU of the bridge and of
its members is the underlay's minus `ENCAPSULATION` (VXLAN over IPv4 adds 50 bytes).
"""

from __future__ import annotations

import errno
import hashlib
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from carte.api.errors import Internal, NotFound

VXLAN_PORT = 4789
ENCAPSULATION = 50
"""Bytes VXLAN over IPv4 adds: outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8."""
_PERMANENT = ndmsg.states["permanent"]


@dataclass(frozen=True, order=True)
class Peer:
    """A container on another node: its overlay address and MAC, and where to send to."""

    ip: str
    mac: str
    underlay: str


def vxlan_name(bridge: str) -> str:
    """The VXLAN device of a network's bridge (15 characters at most)."""
    return "vx" + hashlib.sha256(bridge.encode()).hexdigest()[:12]


class OverlayLinks:
    """VXLAN devices and their static entries, over one reused rtnetlink socket (one thread
    at a time, like `carte.net.links.LinkControl`)."""

    def __init__(self) -> None:
        self._ipr: Any = IPRoute(groups=0)

    def close(self) -> None:
        self._ipr.close()

    def _index(self, name: str) -> int | None:
        found = self._ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def underlay_mtu(self, local: IPv4Address) -> int:
        """The MTU of the link holding the underlay address ``local``."""
        for addr in self._ipr.addr("dump", family=socket.AF_INET):
            if addr.get_attr("IFA_ADDRESS") == str(local):
                link = self._ipr.link("get", index=addr["index"])[0]
                return int(link.get_attr("IFLA_MTU"))
        raise NotFound(
            f"no interface holds the node's underlay address {local}; "
            "the overlay needs it (the address the node joined with)"
        )

    def ensure_vxlan(self, bridge: str, vni: int, local: IPv4Address, mtu: int) -> str:
        """The network's VXLAN device, attached to ``bridge`` and up (made if absent)."""
        name = vxlan_name(bridge)
        master = self._index(bridge)
        if master is None:
            raise NotFound(f'bridge "{bridge}" does not exist; create the network first')
        index = self._index(name)
        try:
            if index is None:
                self._ipr.link(
                    "add",
                    ifname=name,
                    kind="vxlan",
                    vxlan_id=vni,
                    vxlan_local=str(local),
                    vxlan_port=VXLAN_PORT,
                    vxlan_learning=0,
                    vxlan_proxy=1,
                    mtu=mtu,
                )
                index = self._index(name)
            self._ipr.link("set", index=index, master=master, mtu=mtu, state="up")
        except NetlinkError as exc:
            raise Internal(
                f'cannot make VXLAN device "{name}" (VNI {vni}) on {bridge}: {exc.args[1]}'
            ) from None
        return name

    def peers(self, name: str) -> set[Peer]:
        """The static entries of device ``name``, as peers (a MAC with both entries)."""
        index = self._index(name)
        if index is None:
            return set()
        remote = {
            str(e.get_attr("NDA_LLADDR")): str(e.get_attr("NDA_DST"))
            for e in self._ipr.fdb("dump", ifindex=index)
            if e["ifindex"] == index and e.get_attr("NDA_DST")
        }
        return {
            Peer(str(e.get_attr("NDA_DST")), mac, remote[mac])
            for e in self._ipr.neigh("dump", ifindex=index, family=socket.AF_INET)
            if e["ifindex"] == index and (mac := str(e.get_attr("NDA_LLADDR"))) in remote
        }

    def sync_peers(self, name: str, wanted: set[Peer]) -> tuple[int, int]:
        """Make device ``name``'s entries exactly ``wanted``; (added, removed)."""
        index = self._index(name)
        if index is None:
            raise NotFound(f'VXLAN device "{name}" does not exist')
        have = self.peers(name)
        try:
            for peer in sorted(have - wanted):
                self._forget(index, peer)
            for peer in sorted(wanted - have):
                self._forget(index, peer)  # a half entry (the MAC moved, the IP was reused)
                self._ipr.fdb(
                    "add",
                    ifindex=index,
                    lladdr=peer.mac,
                    dst=peer.underlay,
                    state=_PERMANENT,
                    flags=ndmsg.NTF_SELF,
                )
                self._ipr.neigh(
                    "add", ifindex=index, dst=peer.ip, lladdr=peer.mac, state=_PERMANENT
                )
        except NetlinkError as exc:
            raise Internal(f'cannot program VXLAN device "{name}": {exc.args[1]}') from None
        return len(wanted - have), len(have - wanted)

    def _forget(self, index: int, peer: Peer) -> None:
        """Delete both entries of ``peer`` (either may be missing)."""
        entries: list[tuple[str, dict[str, Any]]] = [
            ("fdb", {"lladdr": peer.mac, "dst": peer.underlay}),
            ("neigh", {"dst": peer.ip, "lladdr": peer.mac}),
        ]
        for kind, fields in entries:
            try:
                getattr(self._ipr, kind)("del", ifindex=index, **fields)
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                    raise

    def delete(self, bridge: str) -> bool:
        """Delete the network's VXLAN device (with its entries); False if it was absent."""
        try:
            self._ipr.link("del", ifname=vxlan_name(bridge))
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise Internal(f"cannot delete {vxlan_name(bridge)}: {exc.args[1]}") from None
        return True
