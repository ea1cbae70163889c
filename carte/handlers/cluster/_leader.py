"""Leader election among control planes through the ``cluster/leader`` key, and the leader's
watch over node leases.

Election: a control plane grants itself a lease of ``leader_ttl`` seconds, keeps it alive
(`hold_lease`) and writes ``cluster/leader`` bound to it only if the key is absent (one
transaction). The winner leads until its lease is lost (etcd unreachable for a TTL, or the
daemon died and stopped renewing it): etcd then deletes the key, and the others, watching it,
try again. The store revision of the winning write is the leader's ``fence``.

Node liveness (leader only): ``cluster/nodes/<name>`` is bound to the node's lease, so etcd
deletes it when heartbeats stop for a TTL. The leader follows that prefix and turns a
deletion into NodeDown (member status down) and a reappearance into NodeUp.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
import trio

from carte.api.cluster import LeaderRecord, NodeRecord
from carte.api.errors import Conflict, NotFound, Unavailable
from carte.api.timestamps import now_rfc3339
from carte.engine.store import Change, LeaseExpired, Put, Resync, Store, follow, hold_lease
from carte.handlers.cluster._control import LEADER_KEY, MEMBERS, NODES, ControlPlane

OnLeader = Callable[[str, int], Awaitable[None]]
"""Called with (leader name, fence): the fence is non-zero only when this daemon leads."""


async def campaign(
    store: Store,
    me: LeaderRecord,
    ttl: int,
    on_leader: OnLeader,
    lead: Callable[[int], Awaitable[None]],
    log: logging.Logger,
) -> None:
    """Stand for election forever; while this daemon leads, ``lead(fence)`` runs (it is
    cancelled when the lease is lost). Unreachable etcd is retried with backoff."""

    async def one_term() -> None:
        async with hold_lease(store, ttl) as lease:
            while True:
                try:
                    put = Put(LEADER_KEY, me, lease=lease)
                    fence = await store.txn([put], expect={LEADER_KEY: 0})
                except Conflict:
                    await _wait_for_vacancy(store, on_leader)
                    continue
                log.info("elected leader", extra={"node": me.name, "fence": fence})
                await on_leader(me.name, fence)
                await lead(fence)
                return

    delay = 0.2
    while True:
        try:
            await one_term()
            delay = 0.2
        except (Unavailable, LeaseExpired) as error:
            log.warning("leader election interrupted; standing again", extra={"error": error})
            await on_leader("", 0)
            await trio.sleep(delay)
            delay = min(delay * 2, ttl / 2)


async def _wait_for_vacancy(store: Store, on_leader: OnLeader) -> None:
    """Tell who leads, then return once the leader key is deleted."""
    entries, revision = await store.snapshot(LEADER_KEY)
    current = [entry for entry in entries if entry.key == LEADER_KEY]
    if not current:
        return
    await on_leader(current[0].decode(LeaderRecord).name, 0)
    async with store.watch(LEADER_KEY, since=revision) as changes:
        async for change in changes:
            if change.key == LEADER_KEY and change.deleted:
                return


async def watch_nodes(
    control: ControlPlane,
    on_down: Callable[[str], Awaitable[None]],
    on_up: Callable[[str], Awaitable[None]],
) -> None:
    """Follow ``cluster/nodes/`` (leader only): mark members down or ready as their live
    keys go and come, calling ``on_down``/``on_up`` once per transition."""
    async with follow(control.store, NODES) as changes:
        async for item in changes:
            if isinstance(item, Resync):
                alive = {entry.key[len(NODES) :] for entry in item.entries}
                for member in await control.store.list(MEMBERS):
                    record = member.decode(NodeRecord)
                    await _settle(control, record.name, record.name in alive, on_down, on_up)
            elif isinstance(item, Change):
                name = item.key[len(NODES) :]
                await _settle(control, name, not item.deleted, on_down, on_up)


async def _settle(
    control: ControlPlane,
    name: str,
    alive: bool,
    on_down: Callable[[str], Awaitable[None]],
    on_up: Callable[[str], Awaitable[None]],
) -> None:
    status = "ready" if alive else "down"
    entry = await control.store.get(MEMBERS + name)
    if entry is None or entry.decode(NodeRecord).status == status:
        return  # removed, or nothing to tell (this write's own echo included)
    changed = False

    def mark(record: NodeRecord) -> NodeRecord:
        nonlocal changed
        changed = record.status != status
        if alive:
            return msgspec.structs.replace(record, status="ready", seen=now_rfc3339())
        return msgspec.structs.replace(record, status="down")

    try:
        await control.update_member(name, mark)
    except NotFound:
        return  # removed meanwhile
    if changed:
        await (on_up if alive else on_down)(name)
