"""Bridges and veth pairs, programmed through rtnetlink (synchronous): pyroute2, and for the
few requests of a container's start path (the veth pair, its address, link state and route,
look-ups and deletes) hand-packed batches from `carte.net.rtnetlink`.

One `LinkControl` holds one netlink socket in the host namespace and reuses it for every
call (opening a socket per call costs milliseconds per container start). It may be used from
any one thread at a time; it is not safe for concurrent calls. Close it when done.

Failures raise `Conflict` (a name already taken), `NotFound` (a bridge or namespace that does
not exist) or `Internal` (the kernel refused) naming the link; a failed `connect` removes the
half-made veth pair before raising.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from carte.api.errors import Conflict, Internal, NotFound
from carte.net import rtnetlink as nl
from carte.net.netns import on_own_thread

_CLONE_NEWNET = 0x40000000
_IFNAMSIZ = 15
DEFAULT_MTU = 1500
_LOOPBACK_INDEX = 1  # lo is always ifindex 1 in every network namespace


@dataclass(frozen=True)
class Endpoint:
    """What `LinkControl.connect` made: the host end and the container's interface."""

    host_ifname: str
    ifname: str
    address: IPv4Interface
    mac: str


def host_veth_name(container_id: str, network: str) -> str:
    """A stable host-side veth name for one container on one network (15 characters)."""
    digest = hashlib.sha256(f"{container_id}/{network}".encode()).hexdigest()
    return "vc" + digest[: _IFNAMSIZ - 2]


def bridge_mac(bridge: str) -> str:
    """A stable, locally administered MAC for a bridge, so it does not change as ports join."""
    digest = hashlib.sha256(bridge.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def container_mac(address: IPv4Address) -> str:
    """A MAC derived from the IPv4 address (02:42:a:b:c:d, like Docker), unique per subnet."""
    return ":".join(f"{b:02x}" for b in (0x02, 0x42, *address.packed))


def netns_path(netns: str | os.PathLike[str] | int) -> Path:
    """A network namespace given as a pid (``/proc/PID/ns/net``), a path, or an `ip netns` name."""
    if isinstance(netns, int):
        return Path(f"/proc/{netns}/ns/net")
    path = Path(netns)
    if path.is_absolute():
        return path
    return Path("/run/netns") / path


def _check_ifname(name: str) -> None:
    if not 0 < len(name) <= _IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise Conflict(
            f'interface name "{name}" is invalid; use 1-{_IFNAMSIZ} characters without '
            "spaces or slashes"
        )


def _netlink_socket_in(nsfd: int, path: Path) -> socket.socket:
    """A NETLINK_ROUTE socket living in the namespace open as `nsfd` (from `path`).

    Made on a short-lived thread that joins the namespace and then exits, so the caller's
    thread never changes namespace (setns(CLONE_NEWNET) is per thread).
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def join_and_open() -> socket.socket:
        if libc.setns(nsfd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return nl.route_socket()

    try:
        return on_own_thread(join_and_open, name="carte-netns-socket")
    except OSError as exc:
        raise NotFound(
            f"network namespace {path} cannot be entered ({exc.strerror}); "
            "is the container still running?"
        ) from None


class _HostChanges:
    """A netlink socket told of every IPv4 address and route change in the host namespace.

    Opened before the first read it guards, so no change falls between a read and the
    subscription. A full receive buffer (the kernel dropped messages) counts as a change.
    """

    _GROUPS = 0x10 | 0x40  # RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE

    def __init__(self) -> None:
        flags = socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        self._socket = socket.socket(socket.AF_NETLINK, flags, socket.NETLINK_ROUTE)
        self._socket.bind((0, self._GROUPS))

    def seen(self) -> bool:
        """Whether anything changed since the last call (drains what the kernel sent)."""
        changed = False
        while True:
            try:
                if not self._socket.recv(1 << 16):
                    return changed
            except BlockingIOError:
                return changed
            except OSError:  # ENOBUFS: messages were dropped
                changed = True
                continue
            changed = True

    def close(self) -> None:
        self._socket.close()


class LinkControl:
    """Host-side link operations over one reused rtnetlink socket."""

    def __init__(self) -> None:
        self._ipr: Any = IPRoute(groups=0)
        self._rtnl = nl.Rtnl(nl.route_socket())
        self._changes = _HostChanges()
        self._host_networks: dict[str | None, list[IPv4Network]] = {}

    def close(self) -> None:
        self._changes.close()
        self._rtnl.close()
        self._ipr.close()

    def __enter__(self) -> LinkControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading the host ------------------------------------------------------------------

    def index_of(self, ifname: str) -> int | None:
        try:
            return self._rtnl.index_of(ifname)
        except nl.Failure as failure:
            raise Internal(f'cannot look up interface "{ifname}": {failure.reason}') from None

    def host_networks(self, *, besides: str | None = None) -> list[IPv4Network]:
        """Every IPv4 prefix routed or addressed on the host (all routing tables, no default);
        with `besides`, not counting that link's own addresses and routes through it.

        The dumps cost milliseconds (pyroute2 parses every route), so the answer is kept until
        the kernel reports an IPv4 address or route change on the host."""
        if self._changes.seen():
            self._host_networks.clear()
        known = self._host_networks.get(besides)
        if known is None:
            known = self._host_networks[besides] = self._read_host_networks(besides)
        return list(known)

    def _read_host_networks(self, besides: str | None) -> list[IPv4Network]:
        skip = self.index_of(besides) if besides else None
        networks: set[IPv4Network] = set()
        for route in self._ipr.route("dump", family=socket.AF_INET):
            dst = route.get_attr("RTA_DST")
            if dst and route["dst_len"] > 0 and (skip is None or route.get_attr("RTA_OIF") != skip):
                networks.add(IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
        for addr in self._ipr.addr("dump", family=socket.AF_INET):
            local = addr.get_attr("IFA_ADDRESS")
            if local and (skip is None or addr["index"] != skip):
                networks.add(IPv4Network(f"{local}/{addr['prefixlen']}", strict=False))
        return sorted(networks)

    def uplink_mtu(self) -> int:
        """The MTU of the interface holding the default route; 1500 if there is none."""
        for route in self._ipr.route("dump", family=socket.AF_INET, table=254):
            if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                links = self._ipr.link("get", index=route.get_attr("RTA_OIF"))
                return int(links[0].get_attr("IFLA_MTU"))
        return DEFAULT_MTU

    # -- bridges ---------------------------------------------------------------------------

    def ensure_bridge(self, name: str, gateway: IPv4Interface, mtu: int) -> bool:
        """Create bridge `name` with `gateway` as its address and bring it up.

        Idempotent: an existing bridge of that name ends up with that IPv4 address and up;
        other addresses, left from an earlier subnet, are removed, but not /32 ones: those are
        service VIPs and overlay node addresses their owners keep there (a daemon restarting
        must not take a VIP away while replicas use it).
        Returns True when the bridge was created. Raises `Conflict` if `name` exists but is
        not a bridge.
        """
        _check_ifname(name)
        index = self.index_of(name)
        created = index is None
        if index is None:
            try:
                self._ipr.link("add", ifname=name, kind="bridge", mtu=mtu, address=bridge_mac(name))
            except NetlinkError as exc:
                raise Internal(f'cannot create bridge "{name}": {exc.args[1]}') from None
            index = self.index_of(name)
        else:
            link = self._ipr.link("get", index=index)[0]
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            if kind != "bridge":
                raise Conflict(
                    f'interface "{name}" exists and is not a bridge; remove it or choose '
                    "another bridge name"
                )
        wanted = (str(gateway.ip), gateway.network.prefixlen)
        have = {
            (str(a.get_attr("IFA_ADDRESS")), int(a["prefixlen"]))
            for a in self._ipr.addr("dump", family=socket.AF_INET)
            if a["index"] == index
        }
        try:
            for address, prefixlen in have - {wanted}:  # left from an earlier subnet
                if prefixlen != 32:
                    self._ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
            if wanted not in have:
                self._ipr.addr("add", index=index, address=wanted[0], prefixlen=wanted[1])
            self._ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise Internal(
                f'cannot configure bridge "{name}" as {gateway}: {exc.args[1]}'
            ) from None
        return created

    # -- veth pairs ------------------------------------------------------------------------

    def connect(
        self,
        netns: str | os.PathLike[str] | int,
        *,
        bridge: str,
        host_ifname: str,
        address: IPv4Interface,
        gateway: IPv4Address | None,
        mtu: int,
        ifname: str = "eth0",
        mac: str = "",
    ) -> Endpoint:
        """Plug the namespace `netns` (pid, path or `ip netns` name) into `bridge`.

        Creates a veth pair whose host end is born attached to the bridge and up and whose
        peer is born inside the namespace as `ifname` (one netlink request), then, in one
        batch in the namespace, brings lo up, gives the peer `address`, brings it up and adds
        a default route via `gateway` (skipped when None, e.g. for a second network). On
        failure the pair is deleted again and the error re-raised.
        """
        _check_ifname(host_ifname)
        _check_ifname(ifname)
        mac = mac or container_mac(address.ip)  # a MAC given by the user (Compose's mac_address)
        bridge_index = self.index_of(bridge)
        if bridge_index is None:
            raise NotFound(f'bridge "{bridge}" does not exist; create the network first')
        path = netns_path(netns)
        try:
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NotFound(
                f"network namespace {path} cannot be opened ({exc.strerror}); "
                "is the container still running?"
            ) from None
        peer = (
            nl.ifinfo()  # up only once configured: veth refuses to open before its pair exists
            + nl.string(nl.IFLA_IFNAME, ifname)
            + nl.u32(nl.IFLA_NET_NS_FD, nsfd)
            + nl.u32(nl.IFLA_MTU, mtu)
            + nl.attr(nl.IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
        )
        veth = (
            nl.ifinfo(up=True)
            + nl.string(nl.IFLA_IFNAME, host_ifname)
            + nl.u32(nl.IFLA_MTU, mtu)
            + nl.u32(nl.IFLA_MASTER, bridge_index)
            + nl.attr(
                nl.IFLA_LINKINFO,
                nl.string(nl.IFLA_INFO_KIND, "veth")
                + nl.attr(nl.IFLA_INFO_DATA, nl.attr(nl.VETH_INFO_PEER, peer)),
            )
        )
        create = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_EXCL
        try:
            try:
                self._rtnl.call((nl.RTM_NEWLINK, create, veth))
            except nl.Failure as failure:
                if failure.code == errno.EEXIST:
                    raise Conflict(
                        f'interface "{host_ifname}" (or "{ifname}" in {path}) already exists; '
                        "disconnect it first"
                    ) from None
                raise Internal(f'cannot create veth "{host_ifname}": {failure.reason}') from None
            try:
                self._configure_inside(nsfd, path, ifname, address, gateway)
            except BaseException:
                self.delete_link(host_ifname)
                raise
        finally:
            os.close(nsfd)
        return Endpoint(host_ifname=host_ifname, ifname=ifname, address=address, mac=mac)

    @staticmethod
    def _configure_inside(
        nsfd: int,
        path: Path,
        ifname: str,
        address: IPv4Interface,
        gateway: IPv4Address | None,
    ) -> None:
        """In the namespace: lo up, then `address` on `ifname` and the default route via
        `gateway` (if any), as one batch of requests."""
        inside = nl.Rtnl(_netlink_socket_in(nsfd, path))
        acked = nl.NLM_F_REQUEST | nl.NLM_F_ACK
        steps = [f"find {ifname}", "bring lo up"]
        try:
            answer, _ = inside.call(
                nl.get_link(ifname), (nl.RTM_NEWLINK, acked, nl.ifinfo(_LOOPBACK_INDEX, up=True))
            )
            index = nl.index_in(answer)
            ip = address.ip.packed
            requests = [
                (
                    nl.RTM_NEWADDR,
                    acked | nl.NLM_F_CREATE | nl.NLM_F_EXCL,
                    struct.pack("=BBBBI", socket.AF_INET, address.network.prefixlen, 0, 0, index)
                    + nl.attr(nl.IFA_LOCAL, ip)
                    + nl.attr(nl.IFA_ADDRESS, ip),
                )
            ]
            requests.append((nl.RTM_NEWLINK, acked, nl.ifinfo(index, up=True)))
            steps = [f"add {address} to {ifname}", f"bring {ifname} up"]
            if gateway is not None:
                steps.append(f"add a default route via {gateway}")
                requests.append(
                    (
                        nl.RTM_NEWROUTE,
                        acked | nl.NLM_F_CREATE | nl.NLM_F_EXCL,
                        nl.DEFAULT_ROUTE
                        + nl.attr(nl.RTA_GATEWAY, gateway.packed)
                        + nl.u32(nl.RTA_OIF, index),
                    )
                )
            inside.call(*requests)
        except nl.Failure as failure:
            step = steps[failure.position]
            raise Internal(f"cannot {step} in {path}: {failure.reason}") from None
        finally:
            inside.close()

    def ports_of(self, bridge: str) -> list[str]:
        """Names of the links attached to `bridge` (its containers' host veth ends).

        For reconciliation after a crash: ports that Carte's state does not know are stale.
        An absent bridge has no ports.
        """
        index = self.index_of(bridge)
        if index is None:
            return []
        return sorted(
            str(link.get_attr("IFLA_IFNAME"))
            for link in self._ipr.link("dump")
            if link.get_attr("IFLA_MASTER") == index
        )

    # -- removal ---------------------------------------------------------------------------

    def delete_link(self, ifname: str) -> bool:
        """Delete a link (bridge or host veth end, which takes its peer along).

        Idempotent: returns False when there was nothing to delete.
        """
        request = nl.ifinfo() + nl.string(nl.IFLA_IFNAME, ifname)
        try:
            self._rtnl.call((nl.RTM_DELLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, request))
        except nl.Failure as failure:
            if failure.code == errno.ENODEV:
                return False
            raise Internal(f'cannot delete interface "{ifname}": {failure.reason}') from None
        return True
