"""Forgetting stale connection-tracking entries when a port gets published.

NAT is decided on the first packet of a flow only. A UDP client that kept sending to a host
port before it was published (a DNS or metrics client retrying) has a conntrack entry without
DNAT, and keeps bypassing the new rule until that entry times out. Docker flushes such
entries too. Failures raise `Internal` naming the port.
"""

from __future__ import annotations

import socket
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
    deleted = 0
    try:
        tracker = Conntrack()
    except OSError as exc:
        raise Internal(f"cannot open conntrack to forget flows to port {port}: {exc}") from None
    try:
        for entry in list(tracker.dump_entries(tuple_orig=wanted)):
            if not _stale(entry):
                continue
            try:
                tracker.delete(entry)
            except NetlinkError as exc:
                if exc.code != 2:  # ENOENT: it expired meanwhile
                    raise Internal(
                        f"cannot forget flows to port {port}/{proto}: {exc.args[1]}"
                    ) from None
            deleted += 1
    finally:
        tracker.close()
    return deleted
