"""This node's WireGuard tunnel for encrypted overlay networks (the overlay handler's part;
the design is in `carte.handlers.cluster._overlay`'s docstring).

The key pair lives in the node's certificate directory (``wireguard.json``, mode 0600) with
the generation it was made for; only the public key is published. The link exists while the
node holds an encrypted network: made before that network's VXLAN device (whose local
address is the tunnel's), removed when the last such network goes or the node leaves.
"""

from __future__ import annotations

import hashlib
import json
import os
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio

from carte.api.errors import CarteError, Unavailable
from carte.handlers.cluster._overlay_store import (
    Catalogue,
    TunnelRecord,
    TunnelRequest,
)

if TYPE_CHECKING:
    from carte.handlers.cluster._overlay import OverlayHandler
    from carte.net.wireguard import KeyPair

KEY_FILE = "wireguard.json"
_PUBLISH_WAIT = 15.0
"""Seconds an encrypted network waits for this node's key to be published first."""


class Tunnel:
    def __init__(self, handler: OverlayHandler, port: int) -> None:
        self.handler = handler
        self.port = port
        self.supported: bool | None = None
        self.detail = ""
        self.keys: KeyPair | None = None
        self.generation = 0
        self.record: TunnelRecord | None = None
        """This node's tunnel as last published."""
        self.up = False
        self._published = trio.Event()
        self._lock = trio.Lock()

    @property
    def name(self) -> str:
        from carte.net.wireguard import tunnel_name

        return tunnel_name(hashlib.sha256(str(self.handler.ctx.root).encode()).hexdigest()[:8])

    def _key_file(self) -> Path:
        configured = self.handler._configured
        assert configured is not None
        return Path(configured.certs) / KEY_FILE

    # --- keys and their publication ---------------------------------------------------------

    async def serve(self) -> None:
        """While the node's role lasts: publish its key, and follow the rotations."""
        from carte.net import wireguard

        self.record, self._published = None, trio.Event()
        if self.supported is None:
            support = await trio.to_thread.run_sync(wireguard.encryption_support)
            self.supported, self.detail = support.wireguard, support.wireguard_detail
        if not self.supported:
            self.handler.ctx.log.info(
                "no WireGuard here: this node cannot hold encrypted networks",
                extra={"reason": self.detail},
            )
            return
        await trio.to_thread.run_sync(self._load_keys)
        known = await self.handler.current()
        while True:
            try:
                if known.rotation > self.generation:
                    await self.rotate_to(known.rotation)
                mine = known.tunnels.get(self.handler.node)
                assert self.keys is not None
                if mine is None or mine.public_key != self.keys.public_key:
                    await self.publish()
            except CarteError as error:  # a control plane away or refusing: tried again
                self.handler.ctx.log.warning("WireGuard key not published", extra={"error": error})
                await trio.sleep(1.0)
                known = self.handler._catalogue
                continue
            await self.handler.news()
            known = self.handler._catalogue

    def _load_keys(self) -> None:
        from carte.net import wireguard

        path = self._key_file()
        try:
            saved = json.loads(path.read_text())
            self.keys = wireguard.KeyPair(saved["private_key"], saved["public_key"])
            self.generation = int(saved.get("generation", 0))
            return
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: a new pair
        self._new_keys(self.generation)

    def _new_keys(self, generation: int) -> None:
        from carte.net import wireguard

        keys = wireguard.generate_keypair()
        path = self._key_file()
        saved = {"private_key": keys.private_key, "public_key": keys.public_key}
        text = json.dumps({**saved, "generation": generation})
        temporary = path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
        os.replace(temporary, path)
        self.keys, self.generation = keys, generation

    async def rotate_to(self, generation: int) -> None:
        """A new pair for `generation`: the link re-keyed at once, the public key published."""
        async with self._lock:
            await trio.to_thread.run_sync(self._new_keys, generation)
            if self.up and self.record is not None:
                await self._make_link(self.record)
        self.handler.ctx.log.info("WireGuard key rotated", extra={"generation": generation})
        await self.publish()

    async def publish(self) -> None:
        assert self.keys is not None
        asked = TunnelRequest(
            node=self.handler.node,
            public_key=self.keys.public_key,
            port=self.port,
            generation=self.generation,
        )
        if self.handler.role == "control":
            record = await self.handler.register_here(asked)
        else:
            line = self.handler._line or await self.handler._open_line()
            answer = await line.call(
                "POST", "/v1/cluster/overlay/tunnel", msgspec.to_builtins(asked)
            )
            record = msgspec.convert(answer, TunnelRecord)
        self.record = record
        self._published.set()
        if self.up:
            async with self._lock:
                await self._make_link(record)

    # --- the link ---------------------------------------------------------------------------

    async def ensure(self) -> None:
        """The link up with this node's key and address (an encrypted network needs it)."""
        if self.supported is False:
            raise Unavailable(
                f"this node cannot encrypt ({self.detail}); load the wireguard module "
                "and restart the daemon"
            )
        with trio.move_on_after(_PUBLISH_WAIT):
            await self._published.wait()
        if self.record is None:
            raise Unavailable(
                "this node's WireGuard key is not published yet; try again in a moment"
            )
        async with self._lock:
            if not self.up:
                await self._make_link(self.record)

    async def _make_link(self, record: TunnelRecord) -> None:
        from carte.net import wireguard

        assert self.keys is not None
        keys, name, port = self.keys, self.name, self.port
        address = IPv4Interface(f"{record.address}/{record.subnet.partition('/')[2] or 32}")
        underlay = self.handler._catalogue.nodes.get(self.handler.node, "")

        def make() -> None:
            mtu = _underlay_mtu(underlay) - wireguard.WIREGUARD_OVERHEAD
            wireguard.ensure_tunnel(name, keys, port, address, mtu)

        await trio.to_thread.run_sync(make)
        if not self.up:
            self.handler.ctx.log.info(
                "WireGuard tunnel up", extra={"link": name, "address": record.address}
            )
        self.up = True

    async def set_peers(self, known: Catalogue) -> None:
        """The link's peers: every other node's tunnel (its key, underlay address, port)."""
        from carte.net import wireguard

        peers = [
            wireguard.Peer(
                public_key=tunnel.public_key,
                endpoint=IPv4Address(tunnel.endpoint),
                port=tunnel.port,
                tunnel_address=IPv4Address(tunnel.address),
            )
            for node, tunnel in sorted(known.tunnels.items())
            if node != self.handler.node
        ]
        name = self.name
        await trio.to_thread.run_sync(lambda: wireguard.set_peers(name, peers))

    async def remove(self) -> None:
        """The link goes (no encrypted network left here, or the node left the cluster)."""
        from carte.net import wireguard

        if not self.up:
            return
        async with self._lock:
            name = self.name
            await trio.to_thread.run_sync(wireguard.remove_tunnel, name)
            self.up = False
        self.handler.ctx.log.info("WireGuard tunnel removed", extra={"link": name})


def _underlay_mtu(underlay: str) -> int:
    """The MTU of the link holding ``underlay`` (1500 when it is unknown)."""
    from carte.net.overlay import OverlayLinks

    if not underlay:
        return 1500
    links = OverlayLinks()
    try:
        return links.underlay_mtu(IPv4Address(underlay))
    except CarteError:  # no such address here: the common Ethernet MTU
        return 1500
    finally:
        links.close()
