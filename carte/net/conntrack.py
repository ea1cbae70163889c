"""Forgetting stale connection-tracking entries when a port gets published or a backend
leaves a service.

NAT is decided on the first packet of a flow only. A UDP client that kept sending to a host
port before it was published (a DNS or metrics client retrying) has a conntrack entry without
DNAT, and keeps bypassing the new rule until that entry times out. Docker flushes such
entries too. Likewise a load-balanced backend that left keeps its entries: a new connection
whose 4-tuple matches one in TIME_WAIT (clients on 127.0.0.1 reuse source ports quickly)
reopens that entry, NAT and all, and goes to the backend that left for up to 2 minutes
(`forget_backend`). Failures raise `Internal` naming the port or address.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from ipaddress import IPv4Address
from typing import Any

from pyroute2.conntrack import Conntrack, NFCTAttrTuple
from pyroute2.netlink.exceptions import NetlinkError

from carte.api.errors import Internal
from carte.net.ports import Protocol

_IPS_SEEN_REPLY = 0x2
_IPS_DST_NAT = 0x20
_PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


def _stale(entry: Any) -> bool:
    """An earlier mapping of the port (DNAT'd) or a flow nothing ever answered."""
    status = int(entry.status or 0)
    return bool(status & _IPS_DST_NAT) or not status & _IPS_SEEN_REPLY


def forget_flows(port: int, proto: Protocol = "udp") -> int:
    """Delete stale conntrack entries whose original destination port is `port`.

    Flows that were answered and not NATed (e.g. the host's own queries to a remote server
    on that port) are kept. Returns how many entries were deleted.
    """
    wanted = NFCTAttrTuple(proto=_PROTOCOLS[proto], dport=port)
    with _conntrack(f"port {port}/{proto}") as delete:
        stale = [e for e in delete.tracker.dump_entries(tuple_orig=wanted) if _stale(e)]
        for entry in stale:
            delete(entry)
    return len(stale)


def forget_backend(address: IPv4Address) -> int:
    """Delete the NATed conntrack entries (TCP and UDP) of flows answered by `address`, a
    backend that ended, so their next packet (or a new connection reopening one in
    TIME_WAIT) is balanced anew instead of sent to an address nobody answers. Returns how
    many entries were deleted."""
    deleted = 0
    with _conntrack(str(address)) as delete:
        for proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
            wanted = NFCTAttrTuple(saddr=str(address), proto=proto)
            for entry in list(delete.tracker.dump_entries(tuple_reply=wanted)):
                if not int(entry.status or 0) & _IPS_DST_NAT:
                    continue  # a flow to the container's own address, not balanced
                delete(entry)
                deleted += 1
    return deleted


class _Deleter:
    """Deletes entries from an open conntrack socket; errors name the flows (`what`)."""

    def __init__(self, tracker: Conntrack, what: str) -> None:
        self.tracker = tracker
        self.what = what

    def __call__(self, entry: Any) -> None:
        try:
            self.tracker.delete(entry)
        except NetlinkError as exc:
            if exc.code != 2:  # ENOENT: it expired meanwhile
                raise Internal(f"cannot forget flows to {self.what}: {exc.args[1]}") from None


@contextlib.contextmanager
def _conntrack(what: str) -> Iterator[_Deleter]:
    try:
        tracker = Conntrack()
    except OSError as exc:
        raise Internal(f"cannot open conntrack to forget flows to {what}: {exc}") from None
    try:
        yield _Deleter(tracker, what)
    finally:
        tracker.close()
