"""The control plane's side of membership, on the etcd store: the CA, join tokens, node
records and their leases, revocation. Every control plane can answer these; only the
leader turns lease expiries into NodeDown/NodeUp (`_leader`).

Keys (see `carte.api.cluster`): ``cluster/ca``, ``cluster/tokens``, ``cluster/revoked``,
``cluster/members/<name>`` (kept until ``node rm``) and ``cluster/nodes/<name>`` (the same
record bound to the node's lease: present while the node heartbeats).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import msgspec
import trio

from carte.api.cluster import (
    Capacity,
    CaRecord,
    JoinReply,
    JoinRequest,
    NodeLoad,
    NodeRecord,
    TokenInfo,
)
from carte.api.errors import Conflict, NotFound
from carte.api.timestamps import now_rfc3339
from carte.cluster.pki import (
    ClusterCA,
    Issued,
    RevocationList,
    Revoked,
    TokenBook,
    TokenRecord,
    identify,
)
from carte.engine.store import Delete, LeaseExpired, Put, Store

CA_KEY = "cluster/ca"
TOKENS_KEY = "cluster/tokens"
REVOKED_KEY = "cluster/revoked"
MEMBERS = "cluster/members/"
NODES = "cluster/nodes/"
LOAD = "cluster/load/"
LEADER_KEY = "cluster/leader"


def _token_info(record: TokenRecord, now: datetime.datetime) -> TokenInfo:
    return TokenInfo(
        id=record.id,
        created=record.created.isoformat(timespec="seconds"),
        expires=record.expires.isoformat(timespec="seconds") if record.expires else "",
        state=record.state(now),
    )


class ControlPlane:
    """Membership state in the store (no task of its own; every method is one request)."""

    def __init__(self, store: Store, node_ttl: int) -> None:
        self.store = store
        self.node_ttl = node_ttl
        self._ca: ClusterCA | None = None

    # --- the CA ---------------------------------------------------------------------------

    async def ca(self) -> ClusterCA:
        """The cluster CA; NotFound before `carte cluster init`."""
        if self._ca is None:
            entry = await self.store.get(CA_KEY)
            if entry is None:
                raise NotFound("this cluster has no CA yet; run carte cluster init first")
            record = entry.decode(CaRecord)
            self._ca = await trio.to_thread.run_sync(
                ClusterCA, record.cert.encode(), record.key.encode()
            )
        return self._ca

    async def create_ca(self) -> tuple[ClusterCA, bool]:
        """The cluster's CA, made now unless one exists (True when made)."""
        if await self.store.get(CA_KEY) is None:
            made = await trio.to_thread.run_sync(ClusterCA.create)
            record = CaRecord(cert=made.cert_pem.decode(), key=made.key_pem.decode())
            try:
                await self.store.cas(CA_KEY, record, 0)
                await self.store.cas(TOKENS_KEY, TokenBook(ca_hash=made.hash).encode(), 0)
                self._ca = made
                return made, True
            except Conflict:
                pass  # another control plane made it first: use theirs
        return await self.ca(), False

    # --- tokens ---------------------------------------------------------------------------

    async def _change_tokens(self, change: Callable[[TokenBook], object]) -> object:
        while True:
            entry = await self.store.get(TOKENS_KEY)
            if entry is None:
                raise NotFound("this cluster has no token book; run carte cluster init first")
            book = TokenBook.decode(entry.value)
            result = change(book)
            try:
                await self.store.cas(TOKENS_KEY, book.encode(), entry.revision)
                return result
            except Conflict:
                continue

    async def create_token(self, *, rotate: bool, ttl: float) -> tuple[str, str]:
        """A new join token and its id (``rotate``: every active one revoked first)."""
        lifetime = datetime.timedelta(seconds=ttl) if ttl > 0 else None

        def make(book: TokenBook) -> str:
            return book.rotate(ttl=lifetime) if rotate else book.create(ttl=lifetime)

        token = str(await self._change_tokens(make))
        book = await self._book()
        return book.tokens[-1].id, token

    async def _book(self) -> TokenBook:
        entry = await self.store.get(TOKENS_KEY)
        if entry is None:
            raise NotFound("this cluster has no token book; run carte cluster init first")
        return TokenBook.decode(entry.value)

    async def list_tokens(self) -> list[TokenInfo]:
        now = datetime.datetime.now(datetime.UTC)
        return [_token_info(record, now) for record in (await self._book()).list()]

    async def revoke_token(self, token_id: str) -> TokenInfo:
        record = await self._change_tokens(lambda book: book.revoke(token_id))
        assert isinstance(record, TokenRecord)
        return _token_info(record, datetime.datetime.now(datetime.UTC))

    # --- joining and heartbeats -------------------------------------------------------------

    async def join(self, request: JoinRequest) -> tuple[JoinReply, NodeRecord]:
        """Check the token, sign the CSR, record the node alive. Refused/Conflict otherwise."""
        book = await self._book()
        book.check(request.token)
        ca = await self.ca()
        existing = await self.store.get(MEMBERS + request.name)
        if existing is not None:
            raise Conflict(
                f'node name "{request.name}" is taken in this cluster; remove it first '
                f"(carte node rm {request.name}) or join with another --name"
            )
        issued: Issued = await trio.to_thread.run_sync(
            lambda: ca.sign_node_csr(request.csr.encode(), request.name)
        )
        now = now_rfc3339()
        record = NodeRecord(
            name=request.name,
            addresses=request.addresses,
            labels=request.labels,
            capacity=request.capacity,
            role="worker",
            joined=now,
            seen=now,
            serial=f"{issued.serial:x}",
        )
        record = await self.register(record)
        servers = await self.servers()
        return JoinReply(
            cert=issued.cert.decode(), ca=ca.cert_pem.decode(), servers=servers
        ), record

    async def register(self, record: NodeRecord) -> NodeRecord:
        """Write ``record`` as a member, alive under a new lease (a member already there
        with this name is replaced)."""
        lease = await self.store.grant_lease(self.node_ttl)
        record = msgspec.structs.replace(record, lease=lease, status="ready")
        await self.store.txn(
            [Put(MEMBERS + record.name, record), Put(NODES + record.name, record, lease=lease)]
        )
        return record

    async def heartbeat(
        self, name: str, capacity: Capacity, addresses: list[str], load: NodeLoad | None = None
    ) -> int:
        """Keep node ``name`` alive for another TTL and keep its ``load`` (under its lease,
        beside its record: the record changes only when the lease is new); NotFound if it is
        no member."""
        while True:
            entry = await self.store.get(MEMBERS + name)
            if entry is None:
                raise NotFound(
                    f'node "{name}" is not a member of this cluster (removed?); join it again '
                    "with a new token"
                )
            record = entry.decode(NodeRecord)
            alive = await self.store.get(NODES + name)
            if alive is not None and record.lease:
                try:
                    await self.store.keep_alive(record.lease)
                    if load is not None:
                        await self.store.put(LOAD + name, load, lease=record.lease)
                    return self.node_ttl
                except LeaseExpired:
                    pass
            lease = await self.store.grant_lease(self.node_ttl)
            record = msgspec.structs.replace(
                record,
                lease=lease,
                capacity=capacity,
                addresses=addresses or record.addresses,
                seen=now_rfc3339(),
            )
            operations = [Put(MEMBERS + name, record), Put(NODES + name, record, lease=lease)]
            if load is not None:
                operations.append(Put(LOAD + name, load, lease=lease))
            try:
                await self.store.txn(operations, expect={MEMBERS + name: entry.revision})
                return self.node_ttl
            except Conflict:
                await self.store.revoke_lease(lease)

    async def servers(self) -> list[str]:
        """The addresses of the control planes alive (for nodes to fail over among)."""
        alive = [entry.decode(NodeRecord) for entry in await self.store.list(NODES)]
        return [record.api for record in alive if record.role == "control" and record.api]

    # --- nodes ------------------------------------------------------------------------------

    async def nodes(self) -> list[NodeRecord]:
        """Every member, ``status`` from its live key (ready while its lease holds), with the
        load of its last heartbeat while it is alive."""
        members = await self.store.list(MEMBERS)
        alive = {entry.key[len(NODES) :] for entry in await self.store.list(NODES)}
        loads = {e.key[len(LOAD) :]: e.decode(NodeLoad) for e in await self.store.list(LOAD)}
        records = []
        for entry in members:
            record = entry.decode(NodeRecord)
            if record.name in alive:
                ready = msgspec.structs.replace(record, status="ready", load=loads.get(record.name))
                records.append(ready)
            else:
                records.append(msgspec.structs.replace(record, status="down", load=None))
        return records

    async def node(self, name: str) -> NodeRecord:
        for record in await self.nodes():
            if record.name == name:
                return record
        raise NotFound(f'no node "{name}" in this cluster; see carte node ls')

    async def update_member(
        self, name: str, change: Callable[[NodeRecord], NodeRecord]
    ) -> NodeRecord:
        """Apply ``change`` to the member (and its live copy, same lease); NotFound if none."""
        while True:
            entry = await self.store.get(MEMBERS + name)
            if entry is None:
                raise NotFound(f'no node "{name}" in this cluster; see carte node ls')
            record = change(entry.decode(NodeRecord))
            alive = await self.store.get(NODES + name)
            operations: list[Put | Delete] = [Put(MEMBERS + name, record)]
            expect = {MEMBERS + name: entry.revision}
            if alive is not None:
                live = msgspec.structs.replace(record, status="ready")
                operations.append(Put(NODES + name, live, lease=record.lease))
                expect[NODES + name] = alive.revision
            try:
                await self.store.txn(operations, expect=expect)
                return record
            except (Conflict, LeaseExpired):
                continue

    async def remove(self, name: str, *, force: bool) -> None:
        """Forget node ``name`` and revoke its certificate."""
        record = await self.node(name)
        if record.status == "ready" and not force:
            raise Conflict(
                f'node "{name}" is ready; drain it (carte node drain {name}) and stop its '
                "daemon first, or remove it anyway with --force"
            )
        if record.serial:
            await self._revoke_serial(record)
        await self.store.txn([Delete(MEMBERS + name), Delete(NODES + name)])
        if record.lease:
            await self.store.revoke_lease(record.lease)

    async def _revoke_serial(self, record: NodeRecord) -> None:
        while True:
            entry = await self.store.get(REVOKED_KEY)
            revoked = RevocationList.decode(entry.value) if entry else RevocationList()
            serial = int(record.serial, 16)
            if not revoked.is_revoked(serial):
                revoked.revoked.append(
                    Revoked(
                        serial=serial,
                        name=record.name,
                        at=datetime.datetime.now(datetime.UTC),
                        reason="node rm",
                    )
                )
            try:
                await self.store.cas(REVOKED_KEY, revoked.encode(), entry.revision if entry else 0)
                return
            except Conflict:
                continue

    async def identify(self, cert_pem: str) -> str:
        """``ROLE/NAME`` of a client certificate this CA signed and did not revoke."""
        ca = await self.ca()
        entry = await self.store.get(REVOKED_KEY)
        revoked = RevocationList.decode(entry.value) if entry else None
        identity = ca.verify(cert_pem.encode(), revoked=revoked)
        return f"{identity.role}/{identity.name}"


def identify_unrevoked(cert_pem: str) -> str:
    """``ROLE/NAME`` of a certificate the TLS layer verified against the CA (a worker's
    listener: it holds no revocation list)."""
    identity = identify(cert_pem.encode())
    return f"{identity.role}/{identity.name}"
