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

Threads: all SQLite work runs in a worker thread (``trio.to_thread.run_sync``) behind a
`trio.CapacityLimiter` of one, on one connection. A write is shielded from cancellation
while it commits (bounded by ``busy_timeout``), so a cancelled caller never leaves a commit
half-reported; the cancellation lands right after.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import trio

from carte.api.errors import Conflict, Internal, Unavailable

T = TypeVar("T")


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


class Delete(msgspec.Struct, frozen=True):
    key: str


Operation = Put | Delete


class WatchLagged(Unavailable):
    """A watcher fell too far behind; it must list again and start a new watch."""


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

    async def put(self, key: str, value: object) -> int:
        """Write ``value`` at ``key``; return the new global revision."""
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
        """The global revision: the number of committed write transactions."""
        ...

    def watch(self, prefix: str = "", *, buffer: int = 256) -> AbstractAsyncContextManager[Watch]:
        """Changes under ``prefix`` committed from now on, in revision order."""
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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
"""


class _SqliteWatch:
    def __init__(self, prefix: str, buffer: int) -> None:
        self.prefix = prefix
        self.buffer = buffer
        self.send, self._receive = trio.open_memory_channel[Change](buffer)
        self.lagged = False

    def offer(self, change: Change) -> None:
        """Queue ``change`` without waiting; a full queue ends the watch as lagged."""
        try:
            self.send.send_nowait(change)
        except trio.WouldBlock:
            self.lagged = True
            self.send.close()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def __aiter__(self) -> _SqliteWatch:
        return self

    async def __anext__(self) -> Change:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.lagged:
                raise WatchLagged(
                    f'watch on "{self.prefix}" fell more than {self.buffer} changes behind; '
                    "list the prefix again and start a new watch"
                ) from None
            raise StopAsyncIteration from None

    def close(self) -> None:
        self.send.close()
        self._receive.close()


class SqliteStore:
    """`Store` on one SQLite file. Open it with `open_sqlite_store`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._limiter = trio.CapacityLimiter(1)
        self._write_lock = trio.Lock()
        self._watches: builtins.list[_SqliteWatch] = []

    # --- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT key, value, revision FROM kv WHERE key = ?", (key,)
            ).fetchall()
        )
        return _entry(rows[0]) if rows else None

    async def list(self, prefix: str = "") -> builtins.list[Entry]:
        end = _prefix_end(prefix)

        def select() -> builtins.list[Any]:
            if end is None:
                query = "SELECT key, value, revision FROM kv WHERE key >= ? ORDER BY key"
                return self._db.execute(query, (prefix,)).fetchall()
            query = "SELECT key, value, revision FROM kv WHERE key >= ? AND key < ? ORDER BY key"
            return self._db.execute(query, (prefix, end)).fetchall()

        return [_entry(row) for row in await self._run(select)]

    async def revision(self) -> int:
        rows = await self._run(
            lambda: self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchall()
        )
        return int(rows[0][0])

    # --- writes ---------------------------------------------------------------------------

    async def put(self, key: str, value: object) -> int:
        return await self.txn([Put(key, value)])

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
        encoded = [
            (op.key, encode_value(op.value)) if isinstance(op, Put) else (op.key, None)
            for op in operations
        ]
        async with self._write_lock:
            with trio.CancelScope(shield=True):
                revision, changes = await self._run(lambda: self._commit(encoded, dict(expect)))
            for change in changes:
                for watch in list(self._watches):
                    if change.key.startswith(watch.prefix):
                        watch.offer(change)
        return revision, changes

    def _commit(
        self, operations: Sequence[tuple[str, bytes | None]], expect: dict[str, int]
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
            (current,) = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            revision = int(current) + 1
            changes: builtins.list[Change] = []
            for key, value in operations:
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
                changes.append(Change(key=key, value=value, revision=revision))
            if not changes:
                db.execute("ROLLBACK")
                return int(current), []
            db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return revision, changes

    # --- watch ----------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, prefix: str = "", *, buffer: int = 256) -> AsyncIterator[Watch]:
        """See `Store.watch`. Writers never wait for a watcher: one that falls more than
        ``buffer`` changes behind gets `WatchLagged` from its iterator. Ends on exit/cancel.
        """
        watch = _SqliteWatch(prefix, buffer)
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

    async def aclose(self) -> None:
        """Checkpoint the WAL and close the connection; safe to call twice."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._db.close, limiter=self._limiter)


def _entry(row: Any) -> Entry:
    return Entry(key=row[0], value=bytes(row[1]), revision=int(row[2]))


def _connect(path: Path) -> sqlite3.Connection:
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
async def open_sqlite_store(path: str | Path) -> AsyncIterator[SqliteStore]:
    """Open (creating if needed) the store at ``path``; closed when the block exits.

    Raises Unavailable naming the file and the fix if it cannot be opened (missing
    directory, permissions, not a database).
    """
    path = Path(path)
    try:
        db = await trio.to_thread.run_sync(_connect, path)
    except sqlite3.Error as error:
        raise Unavailable(
            f"cannot open state store {path}: {error}; check that the directory exists and "
            "is writable, or move the damaged file away"
        ) from error
    store = SqliteStore(db, path)
    try:
        yield store
    finally:
        await store.aclose()
