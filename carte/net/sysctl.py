"""The few kernel switches Carte's networking needs, each returning whether it changed anything.

The daemon logs a line when a function returns True (e.g. "enabled net.ipv4.ip_forward").
Failures raise `Unavailable` naming the switch; nothing is changed in that case.
"""

from __future__ import annotations

from pathlib import Path

from carte.api.errors import Unavailable

_PROC_SYS = Path("/proc/sys")


def _ensure(key: str, value: str) -> bool:
    path = _PROC_SYS / key.replace(".", "/")
    try:
        if path.read_text().strip() == value:
            return False
        path.write_text(value + "\n")
    except OSError as exc:
        raise Unavailable(
            f"cannot set {key}={value} ({exc.strerror}); run the daemon as root on a kernel "
            "with this setting"
        ) from None
    return True


def enable_ip_forward() -> bool:
    """Turn on IPv4 forwarding host-wide so containers reach the outside through NAT."""
    return _ensure("net.ipv4.ip_forward", "1")


def enable_route_localnet(bridge: str) -> bool:
    """Allow 127.0.0.0/8 sources to be routed out of `bridge`.

    Needed so a published port answers on 127.0.0.1: the output-hook DNAT reroutes a packet
    whose source is 127.0.0.1 out of the bridge, which the kernel otherwise drops as martian.
    Carte's rules masquerade such packets and drop 127.0.0.0/8 destinations arriving from the
    bridge, so containers cannot reach the host's loopback services through this switch.
    """
    return _ensure(f"net.ipv4.conf.{bridge}.route_localnet", "1")


def enable_bridge_netfilter() -> bool:
    """Send bridged IPv4 traffic through the ip hooks so network policies see it.

    Traffic between two containers on one bridge is switched, not routed; without this
    (br_netfilter) the forward chain never sees it. Docker turns on the same switch.
    """
    return _ensure("net.bridge.bridge-nf-call-iptables", "1")
