"""The state store: the source of truth, behind an interface narrow enough for etcd.

`Store` is the interface (a Protocol); `SqliteStore` is the embedded implementation.
Keys are strings ordered bytewise; values are bytes (anything else is encoded as JSON with
msgspec). Every write transaction bumps one global revision and stamps it on the keys it
wrote, so ``cas`` can say "only if nobody changed this since I read it" — as etcd does.

Durability: SQLite in WAL mode with ``synchronous=FULL``: each commit fsyncs the WAL before it
returns, so a committed write survives SIGKILL and power loss alike. NORMAL would survive
SIGKILL too but may lose the last commits on power loss; state writes are rare next to
container work, so we pay for FULL. SQLite checkpoints the WAL into the main file
automatically every 1000 pages, and on close.

Leases: a key written with ``lease=`` is deleted (one revision, watchers told) when its lease
expires or is revoked, as in etcd. `grant_lease` / `keep_alive` / `revoke_lease` are the raw
calls; `hold_lease` keeps one alive from a trio task. SQLite keeps lease TTLs in the file and
restarts every countdown when it is opened (etcd does the same on a leader change).

Watches start "from now" or from ``since`` (a revision from `snapshot`, so list-then-watch has
no gap). SQLite keeps the last `HISTORY` changes in memory for that; older is "compacted".
`follow` is the list-watch loop that recovers from lag, compaction and an unreachable store.

Threads: all SQLite work runs in a worker thread (``trio.to_thread.run_sync``) behind a
`trio.CapacityLimiter` of one, on one connection. A write is shielded from cancellation
while it commits (bounded by ``busy_timeout``), so a cancelled caller never leaves a commit
half-reported; the cancellation lands right after.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import trio

from carte.api.errors import Conflict, Internal, NotFound, Unavailable

T = TypeVar("T")
HISTORY = 1000
log = logging.getLogger("carte.engine.store")


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """A key's current value and the global revision of its last write."""

    key: str
    value: bytes
    revision: int

    def decode(self, type: type[T]) -> T:
        """The value decoded as JSON into ``type``; raises msgspec.ValidationError if it is not."""
        return msgspec.json.decode(self.value, type=type)


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One committed write, as a watcher sees it; ``value`` is None for a delete."""

    key: str
    value: bytes | None
    revision: int

    @property
    def deleted(self) -> bool:
        return self.value is None


class Put(msgspec.Struct, frozen=True):
    key: str
    value: Any
    lease: int | None = None
    """The key is deleted when this lease expires or is revoked; None: no lease."""


class Delete(msgspec.Struct, frozen=True):
    key: str


Operation = Put | Delete


class WatchLagged(Unavailable):
    """A watcher fell too far behind (or asked for a compacted revision); list again."""


class LeaseExpired(NotFound):
    """The lease expired or was revoked; its keys are gone. Grant a new one and write again."""


class Resync(msgspec.Struct, frozen=True, kw_only=True):
    """`follow`'s full view of its prefix at ``revision``: replace whatever you had."""

    entries: list[Entry]
    revision: int


class Watch(Protocol):
    """An async iterator of `Change` for one prefix. Raises `WatchLagged` if it fell behind."""

    def __aiter__(self) -> Watch: ...

    async def __anext__(self) -> Change: ...


class Store(Protocol):
    """The narrow state-store interface every backend implements."""

    async def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None."""
        ...

    async def list(self, prefix: str = "") -> list[Entry]:
        """Every entry whose key starts with ``prefix``, in key order."""
        ...

    async def put(self, key: str, value: object, *, lease: int | None = None) -> int:
        """Write ``value`` at ``key`` (bound to ``lease`` if given); return the new revision.

        Raises LeaseExpired if ``lease`` is gone.
        """
        ...

    async def delete(self, key: str) -> int | None:
        """Remove ``key``; return the new global revision, or None if it did not exist."""
        ...

    async def cas(self, key: str, value: object, revision: int) -> int:
        """Write only if ``key``'s revision is ``revision`` (0: only if absent).

        Returns the new global revision; raises Conflict naming the key otherwise.
        """
        ...

    async def txn(self, operations: Sequence[Operation], expect: Mapping[str, int] = {}) -> int:
        """Apply ``operations`` atomically if every key in ``expect`` has that revision.

        One transaction per command. Returns the new global revision; raises Conflict.
        """
        ...

    async def revision(self) -> int:
        """The global revision: it grows by one with every committed write transaction."""
        ...

    async def snapshot(self, prefix: str = "") -> tuple[builtins.list[Entry], int]:
        """`list` and the global revision it was read at, atomically (for ``watch(since=)``)."""
        ...

    def watch(
        self, prefix: str = "", *, buffer: int = 256, since: int | None = None
    ) -> AbstractAsyncContextManager[Watch]:
        """Changes under ``prefix`` in revision order: those after ``since``, or from now on.

        The watch is established when the block is entered. Its iterator raises WatchLagged
        if it fell ``buffer`` changes behind or ``since`` is compacted, Unavailable if the
        store went away; `follow` handles both.
        """
        ...

    async def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (at least 1); returns its id."""
        ...

    async def keep_alive(self, lease: int) -> int:
        """Restart ``lease``'s countdown; returns its TTL. Raises LeaseExpired if it is gone."""
        ...

    async def revoke_lease(self, lease: int) -> None:
        """Delete ``lease`` and every key bound to it now; a lease already gone is no error."""
        ...


def encode_value(value: object) -> bytes:
    """Bytes stay bytes; anything else becomes JSON via msgspec (Structs included)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return msgspec.json.encode(value)


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


# --- recovery helpers for every backend ---------------------------------------------------


@asynccontextmanager
async def open_nursery_unwrapped() -> AsyncIterator[trio.Nursery]:
    """A nursery whose single error leaves it as itself, not in an ExceptionGroup.

    For context managers whose background task is an implementation detail: a caller of
    ``watch`` or ``hold_lease`` catches ``WatchLagged``/``LeaseExpired``, not a group.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def retry_unavailable(
    call: Callable[[], Awaitable[T]],
    *,
    initial: float = 0.1,
    factor: float = 2.0,
    maximum: float = 5.0,
    what: str = "state store",
) -> T:
    """Await ``call()`` until it does not raise Unavailable, sleeping with capped backoff.

    Never gives up: wrap it in `trio.fail_after` to bound it. Cancellation ends it at once.
    Other errors (Conflict, NotFound, ...) propagate from the first attempt that raises them.
    """
    delay = initial
    while True:
        try:
            return await call()
        except Unavailable as error:
            log.warning(f"{what} unavailable; retrying", extra={"error": error, "delay": delay})
        await trio.sleep(delay)
        delay = min(delay * factor, maximum)


@asynccontextmanager
async def hold_lease(store: Store, ttl: int) -> AsyncIterator[int]:
    """Grant a ``ttl``-second lease and keep it alive from a task until the block exits.

    The keep-alive runs every ttl/3 seconds and retries an unreachable store with backoff.
    If the lease is lost anyway (the store was away longer than ``ttl``), LeaseExpired is
    raised out of the block (its keys are gone: grant a new lease and write them again).
    On exit the lease is revoked (shielded, best effort: if the store is away, it expires).
    """
    lease = await store.grant_lease(ttl)

    async def keep() -> None:
        while True:
            await trio.sleep(ttl / 3)
            deadline = trio.current_time() + ttl
            try:
                with trio.fail_after(max(deadline - trio.current_time(), 0.001)):
                    await retry_unavailable(
                        lambda: store.keep_alive(lease), maximum=ttl / 3, what="lease keep-alive"
                    )
            except trio.TooSlowError:
                raise LeaseExpired(
                    f"lease {lease:x} expired: the state store was unreachable for {ttl} s; "
                    "its keys are gone, write them again under a new lease"
                ) from None

    try:
        async with open_nursery_unwrapped() as nursery:
            nursery.start_soon(keep)
            yield lease
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(2, shield=True):
            try:
                await store.revoke_lease(lease)
            except Unavailable:
                pass


@asynccontextmanager
async def follow(
    store: Store, prefix: str = "", *, buffer: int = 256
) -> AsyncIterator[trio.MemoryReceiveChannel[Resync | Change]]:
    """A list-then-watch of ``prefix`` that never loses a change and never gives up.

    The channel first gives a `Resync` (every entry and the revision read), then each
    `Change` after it. When the watch lags, hits a compacted revision or the store goes
    away, it lists again (retrying with backoff) and gives a fresh `Resync`. The task ends
    when the block exits.
    """
    send, receive = trio.open_memory_channel[Resync | Change](0)

    async def run() -> None:
        async with send:
            while True:
                entries, revision = await retry_unavailable(lambda: store.snapshot(prefix))
                await send.send(Resync(entries=entries, revision=revision))
                try:
                    async with store.watch(prefix, buffer=buffer, since=revision) as changes:
                        async for change in changes:
                            await send.send(change)
                except Unavailable as error:
                    log.info("watch interrupted; listing again", extra={"error": error})
                    await trio.sleep(0.1)

    async with open_nursery_unwrapped() as nursery:
        nursery.start_soon(run)
        try:
            yield receive
        finally:
            nursery.cancel_scope.cancel()


# --- SQLite -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lease_keys (
    key TEXT PRIMARY KEY,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
"""


class QueuedWatch:
    """A `Watch` its store feeds: `offer` queues a change without waiting (a full queue ends
    the watch as lagged) and `end` ends it, with the error its iterator then raises (the first
    one given wins). The SQLite and etcd stores both hand these out."""

    def __init__(self, prefix: str, buffer: int) -> None:
        self.prefix = prefix
        self.buffer = buffer
        self.send, self._receive = trio.open_memory_channel[Change](buffer)
        self.error: Exception | None = None

    def offer(self, change: Change) -> None:
        """Queue ``change`` without waiting; a full queue ends the watch as lagged."""
        try:
            self.send.send_nowait(change)
        except trio.WouldBlock:
            self.end(
                WatchLagged(
                    f'watch on "{self.prefix}" fell more than {self.buffer} changes behind; '
                    "list the prefix again and start a new watch"
                )
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def end(self, error: Exception | None) -> None:
        if self.error is None:
            self.error = error
        self.send.close()

    def __aiter__(self) -> QueuedWatch:
        return self

    async def __anext__(self) -> Change:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.error is not None:
                raise self.error from None
            raise StopAsyncIteration from None

    def close(self) -> None:
        self.send.close()
        self._receive.close()


_Op = tuple[str, bytes | None, int | None]


class SqliteStore:
    """`Store` on one SQLite file. Open it with `open_sqlite_store`."""

    def __init__(self, connection: sqlite3.Connection, path: Path, history: int = HISTORY) -> None:
        self._db = connection
        self.path = path
        self._limiter = trio.CapacityLimiter(1)
        self._write_lock = trio.Lock()
        self._watches: builtins.list[QueuedWatch] = []
        self._history: deque[Change] = deque(maxlen=history)
        self._revision = 0
        self._lease_ttls: dict[int, int] = {}
        self._lease_deadlines: dict[int, float] = {}
        self._leases_changed = trio.Event()

    # --- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT key, value, revision FROM kv WHERE key = ?", (key,)
            ).fetchall()
        )
        return _entry(rows[0]) if rows else None

    async def list(self, prefix: str = "") -> builtins.list[Entry]:
        return (await self.snapshot(prefix))[0]

    async def snapshot(self, prefix: str = "") -> tuple[builtins.list[Entry], int]:
        end = _prefix_end(prefix)

        def select() -> tuple[builtins.list[Any], int]:
            if end is None:
                query = "SELECT key, value, revision FROM kv WHERE key >= ? ORDER BY key"
                rows = self._db.execute(query, (prefix,)).fetchall()
            else:
                query = (
                    "SELECT key, value, revision FROM kv WHERE key >= ? AND key < ? ORDER BY key"
                )
                rows = self._db.execute(query, (prefix, end)).fetchall()
            return rows, self._read_revision()

        rows, revision = await self._run(select)
        return [_entry(row) for row in rows], revision

    async def revision(self) -> int:
        return await self._run(self._read_revision)

    def _read_revision(self) -> int:
        (value,) = self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return int(value)

    # --- writes ---------------------------------------------------------------------------

    async def put(self, key: str, value: object, *, lease: int | None = None) -> int:
        return await self.txn([Put(key, value, lease)])

    async def delete(self, key: str) -> int | None:
        revision, changes = await self._write([Delete(key)], {})
        return revision if changes else None

    async def cas(self, key: str, value: object, revision: int) -> int:
        return await self.txn([Put(key, value)], expect={key: revision})

    async def txn(self, operations: Sequence[Operation], expect: Mapping[str, int] = {}) -> int:
        """See `Store.txn`. The commit is shielded from cancellation; watchers are fed after it.

        Deleting a key that does not exist changes nothing; a transaction that changes
        nothing does not bump the global revision.
        """
        return (await self._write(operations, expect))[0]

    async def _write(
        self, operations: Sequence[Operation], expect: Mapping[str, int]
    ) -> tuple[int, builtins.list[Change]]:
        encoded: builtins.list[_Op] = [
            (op.key, encode_value(op.value), op.lease)
            if isinstance(op, Put)
            else (op.key, None, None)
            for op in operations
        ]
        async with self._write_lock:
            with trio.CancelScope(shield=True):
                revision, changes = await self._run(lambda: self._commit(encoded, dict(expect)))
            self._publish(revision, changes)
        return revision, changes

    def _publish(self, revision: int, changes: builtins.list[Change]) -> None:
        self._revision = revision
        for change in changes:
            self._history.append(change)
            for watch in list(self._watches):
                if change.key.startswith(watch.prefix):
                    watch.offer(change)

    def _commit(
        self, operations: Sequence[_Op], expect: dict[str, int]
    ) -> tuple[int, builtins.list[Change]]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, wanted in expect.items():
                row = db.execute("SELECT revision FROM kv WHERE key = ?", (key,)).fetchone()
                found = int(row[0]) if row else 0
                if found != wanted:
                    raise Conflict(
                        f'key "{key}" changed: expected revision {wanted}, found {found}; '
                        "read it again and retry"
                    )
            for _, _, lease in operations:
                if (
                    lease is not None
                    and not db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone()
                ):
                    raise _lease_gone(lease)
            current = self._read_revision()
            revision = current + 1
            changes: builtins.list[Change] = []
            for key, value, lease in operations:
                db.execute("DELETE FROM lease_keys WHERE key = ?", (key,))
                if value is None:
                    if db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 0:
                        continue
                else:
                    db.execute(
                        "INSERT INTO kv (key, value, revision) VALUES (?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                        "revision = excluded.revision",
                        (key, value, revision),
                    )
                    if lease is not None:
                        db.execute("INSERT INTO lease_keys VALUES (?, ?)", (key, lease))
                changes.append(Change(key=key, value=value, revision=revision))
            if not changes:
                db.execute("ROLLBACK")
                return current, []
            db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return revision, changes

    # --- leases ---------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        ttl = max(int(ttl), 1)
        lease = secrets.randbits(62) + 1
        async with self._write_lock:
            with trio.CancelScope(shield=True):
                await self._run(
                    lambda: self._db.execute("INSERT INTO leases VALUES (?, ?)", (lease, ttl))
                )
            self._lease_ttls[lease] = ttl
            self._lease_deadlines[lease] = trio.current_time() + ttl
            self._leases_changed.set()
        return lease

    async def keep_alive(self, lease: int) -> int:
        await trio.lowlevel.checkpoint()
        deadline = self._lease_deadlines.get(lease)
        if deadline is None or deadline <= trio.current_time():
            raise _lease_gone(lease)
        ttl = self._lease_ttls[lease]
        self._lease_deadlines[lease] = trio.current_time() + ttl
        return ttl

    async def revoke_lease(self, lease: int) -> None:
        async with self._write_lock:
            self._lease_ttls.pop(lease, None)
            self._lease_deadlines.pop(lease, None)
            self._leases_changed.set()
            with trio.CancelScope(shield=True):
                revision, changes = await self._run(lambda: self._drop_lease(lease))
            self._publish(revision, changes)

    def _drop_lease(self, lease: int) -> tuple[int, builtins.list[Change]]:
        db = self._db
        keys = [k for (k,) in db.execute("SELECT key FROM lease_keys WHERE lease = ?", (lease,))]
        revision, changes = self._commit([(key, None, None) for key in keys], {})
        db.execute("DELETE FROM leases WHERE id = ?", (lease,))
        return revision, changes

    async def expire_leases(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Revoke each lease when its countdown ends; runs until cancelled."""
        task_status.started()
        while True:
            self._leases_changed = trio.Event()
            now = trio.current_time()
            for lease, deadline in list(self._lease_deadlines.items()):
                if deadline <= now:
                    await self.revoke_lease(lease)
            earliest = min(self._lease_deadlines.values(), default=float("inf"))
            with trio.move_on_at(earliest):
                await self._leases_changed.wait()

    # --- watch ----------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, prefix: str = "", *, buffer: int = 256, since: int | None = None
    ) -> AsyncIterator[Watch]:
        """See `Store.watch`. Writers never wait for a watcher: one that falls more than
        ``buffer`` changes behind gets `WatchLagged` from its iterator. Ends on exit/cancel.
        ``since`` older than the last `HISTORY` changes is compacted (WatchLagged).
        """
        watch = QueuedWatch(prefix, buffer)
        async with self._write_lock:  # no commit lands between the replay and registering
            if since is not None and since < self._revision:
                oldest = self._history[0].revision if self._history else self._revision + 1
                if since + 1 < oldest:
                    watch.end(
                        WatchLagged(
                            f'watch on "{prefix}" from revision {since}: compacted (the store '
                            f"keeps changes from revision {oldest}); list the prefix again"
                        )
                    )
                else:
                    for change in self._history:
                        if change.revision > since and change.key.startswith(prefix):
                            watch.offer(change)
            self._watches.append(watch)
        try:
            yield watch
        finally:
            self._watches.remove(watch)
            watch.close()

    # --- plumbing -------------------------------------------------------------------------

    async def _run(self, work: Callable[[], T]) -> T:
        try:
            return await trio.to_thread.run_sync(work, limiter=self._limiter)
        except sqlite3.Error as error:
            raise Internal(
                f"state store {self.path} failed: {error}; check the disk and the file's "
                "integrity (sqlite3 state.db 'PRAGMA integrity_check')"
            ) from error

    async def _load(self) -> None:
        """Read the revision and restart every stored lease's countdown."""

        def read() -> tuple[int, builtins.list[Any]]:
            return self._read_revision(), self._db.execute("SELECT id, ttl FROM leases").fetchall()

        self._revision, leases = await self._run(read)
        now = trio.current_time()
        for lease, ttl in leases:
            self._lease_ttls[int(lease)] = int(ttl)
            self._lease_deadlines[int(lease)] = now + int(ttl)

    async def aclose(self) -> None:
        """Checkpoint the WAL and close the connection; safe to call twice."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._db.close, limiter=self._limiter)


def _lease_gone(lease: int) -> LeaseExpired:
    return LeaseExpired(
        f"lease {lease:x} not found: it expired or was revoked; grant a new lease and "
        "write its keys again"
    )


def _entry(row: Any) -> Entry:
    return Entry(key=row[0], value=bytes(row[1]), revision=int(row[2]))


def _connect(path: Path) -> sqlite3.Connection:
    # Containers' environment (passwords) is stored here: root only. SQLite gives the -wal
    # and -shm files the database file's mode; older ones are narrowed too.
    if str(path) != ":memory:":
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as error:
            raise sqlite3.OperationalError(error.strerror or str(error)) from None
        for suffix in ("", "-wal", "-shm"):
            private = path.with_name(path.name + suffix)
            with suppress(FileNotFoundError):
                os.chmod(private, 0o600)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


@asynccontextmanager
async def open_sqlite_store(
    path: str | Path, *, history: int = HISTORY
) -> AsyncIterator[SqliteStore]:
    """Open (creating if needed) the store at ``path``; closed when the block exits.

    ``history``: how many recent changes a ``watch(since=)`` can replay (older: compacted).

    A task revokes leases as they expire while the block runs. Raises Unavailable naming
    the file and the fix if it cannot be opened (missing directory, permissions, not a
    database).
    """
    path = Path(path)
    try:
        db = await trio.to_thread.run_sync(_connect, path)
    except sqlite3.Error as error:
        raise Unavailable(
            f"cannot open state store {path}: {error}; check that the directory exists and "
            "is writable, or move the damaged file away"
        ) from error
    store = SqliteStore(db, path, history)
    try:
        await store._load()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.expire_leases)
            yield store
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()
