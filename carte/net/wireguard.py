"""WireGuard tunnels between nodes, for networks created with ``encrypted: true``.

The kernel does the cryptography (the ``wireguard`` module); this module only makes the link
and sets its keys and peers through pyroute2's generic-netlink client. Keys are X25519 pairs
made with the ``cryptography`` package (already Carte's for the cluster CA), base64 as
WireGuard writes them. Synchronous, like the rest of ``carte.net``: callers run it in a worker
thread.

The design (docs/architecture.md, "Overlay"): each node has one tunnel link with an address
from the cluster's tunnel subnet; a peer is another node, reached at its underlay address and
allowed only its own tunnel address. An encrypted overlay's VXLAN then sends to the peer's
*tunnel* address instead of its underlay address, so every encapsulated frame leaves the node
inside WireGuard.

`encryption_support()` tells whether this kernel can encrypt at all; a network that asks for
encryption on a kernel that cannot is refused by the caller, never created in clear. Failures
raise `Internal` naming the link and what the kernel said.
"""

from __future__ import annotations

import base64
import errno
import os
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pyroute2 import IPRoute, WireGuard
from pyroute2.netlink.exceptions import NetlinkError

from carte.api.errors import Internal, InvalidArgument

DEFAULT_PORT = 51820
WIREGUARD_OVERHEAD = 80  # IPv6 outer header (40) + UDP (8) + WireGuard (32): wg-quick's figure
_KEY_BYTES = 32


@dataclass(frozen=True)
class KeyPair:
    """A node's WireGuard keys, base64 as `wg genkey` / `wg pubkey` print them."""

    private_key: str
    public_key: str


@dataclass(frozen=True)
class Peer:
    """Another node: its public key, where it listens, and the tunnel address it owns."""

    public_key: str
    endpoint: IPv4Address
    port: int
    tunnel_address: IPv4Address


@dataclass(frozen=True)
class EncryptionSupport:
    """What this kernel can encrypt with, and why not where it cannot."""

    wireguard: bool
    esp: bool
    wireguard_detail: str
    esp_detail: str


def generate_keypair() -> KeyPair:
    """A fresh X25519 pair (the kernel and `wg` accept it as is)."""
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(
        private_key=base64.b64encode(raw_private).decode(),
        public_key=base64.b64encode(raw_public).decode(),
    )


def check_key(key: str, what: str) -> str:
    """`key` if it is base64 of 32 bytes, else `InvalidArgument` naming `what`."""
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != _KEY_BYTES:
        raise InvalidArgument(f"{what} {key[:12]!r}... is not a WireGuard key (base64 of 32 bytes)")
    return key


def _module_loadable(module: str) -> tuple[bool, str]:
    if os.path.isdir(f"/sys/module/{module}"):
        return True, f"{module} module loaded"
    try:
        probe = subprocess.run(
            ["modprobe", module], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"modprobe {module}: {exc}"
    if probe.returncode == 0:
        return True, f"{module} module loaded by modprobe"
    reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "not found"
    return False, f"this kernel has no {module} module ({reason})"


def _wireguard_link_works() -> tuple[bool, str]:
    """Whether the kernel makes a wireguard link (built-in kernels have no /sys/module entry)."""
    name = f"cwgprobe{os.getpid() % 10000}"
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind="wireguard")
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return True, "wireguard links can be made"
            return False, f"the kernel cannot make a wireguard link ({os.strerror(exc.code)})"
        ipr.link("del", ifname=name)
    return True, "wireguard links can be made"


def encryption_support() -> EncryptionSupport:
    """Probe WireGuard (by making and removing a link) and ESP (the esp4 module)."""
    wireguard, wireguard_detail = _module_loadable("wireguard")
    if not wireguard:
        built_in, detail = _wireguard_link_works()
        if built_in:
            wireguard, wireguard_detail = True, detail
    esp, esp_detail = _module_loadable("esp4")
    return EncryptionSupport(
        wireguard=wireguard, esp=esp, wireguard_detail=wireguard_detail, esp_detail=esp_detail
    )


def tunnel_name(root_tag: str) -> str:
    """The tunnel link of the daemon whose root hashes to `root_tag` (15 characters at most)."""
    return ("cwg" + root_tag)[:15]


def ensure_tunnel(name: str, keys: KeyPair, port: int, address: IPv4Interface, mtu: int) -> None:
    """Make (or re-key) the tunnel link `name`, with its address, and bring it up.

    Idempotent: an existing link keeps its peers and gets the given key, port and address.
    On failure a link made by this call is removed before `Internal` is raised.
    """
    check_key(keys.private_key, "private key")
    made = False
    with IPRoute() as ipr:
        try:
            if not ipr.link_lookup(ifname=name):
                ipr.link("add", ifname=name, kind="wireguard")
                made = True
            index = ipr.link_lookup(ifname=name)[0]
            with WireGuard() as wg:
                wg.set(name, private_key=keys.private_key, listen_port=port)
            present = {
                (attr.get("IFA_ADDRESS"), msg["prefixlen"])
                for msg in ipr.get_addr(index=index)
                for attr in [dict(msg["attrs"])]
            }
            if (str(address.ip), address.network.prefixlen) not in present:
                ipr.addr(
                    "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
                )
            ipr.link("set", index=index, mtu=mtu, state="up")
        except NetlinkError as exc:
            if made:
                ipr.link("del", ifname=name)
            raise Internal(f"tunnel {name}: the kernel refused ({os.strerror(exc.code)})") from exc


def set_peers(name: str, peers: list[Peer], *, keepalive: int = 25) -> None:
    """Make `name`'s peers exactly `peers`: new ones added, changed ones updated, gone removed."""
    wanted = {peer.public_key: peer for peer in peers}
    with WireGuard() as wg:
        try:
            present = set(current_peers(name, wg))
            for public_key in present - wanted.keys():
                wg.set(name, peer={"public_key": public_key, "remove": True})
            for peer in wanted.values():
                wg.set(
                    name,
                    peer={
                        "public_key": check_key(peer.public_key, "peer key"),
                        "endpoint_addr": str(peer.endpoint),
                        "endpoint_port": peer.port,
                        "persistent_keepalive": keepalive,
                        "replace_allowed_ips": True,
                        "allowed_ips": [f"{peer.tunnel_address}/32"],
                    },
                )
        except NetlinkError as exc:
            raise Internal(
                f"tunnel {name}: setting peers failed ({os.strerror(exc.code)})"
            ) from exc


def current_peers(name: str, wg: WireGuard | None = None) -> list[str]:
    """The public keys of `name`'s peers, as the kernel has them."""
    if wg is None:
        with WireGuard() as own:
            return current_peers(name, own)
    keys: list[str] = []
    for message in wg.info(name):
        for peer in message.get_attr("WGDEVICE_A_PEERS") or []:
            public = peer.get_attr("WGPEER_A_PUBLIC_KEY")
            if public:
                keys.append(public.decode() if isinstance(public, bytes) else str(public))
    return keys


def remove_tunnel(name: str) -> bool:
    """Delete the tunnel link; False if it did not exist."""
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=name):
            return False
        ipr.link("del", ifname=name)
    return True
