"""The SQLite state store: the narrow interface, watch, and durability across SIGKILL."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from carte.api.errors import Conflict
from carte.engine import Delete, Put, SqliteStore, WatchLagged, open_sqlite_store


class Container(msgspec.Struct, frozen=True):
    name: str
    image: str


async def test_put_get_delete(store: SqliteStore) -> None:
    assert await store.get("containers/a") is None
    revision = await store.put("containers/a", Container("a", "busybox"))
    entry = await store.get("containers/a")
    assert entry is not None
    assert entry.revision == revision == 1
    assert entry.decode(Container) == Container("a", "busybox")
    assert await store.put("raw", b"\x00\xff") == 2
    assert (await store.get("raw")).value == b"\x00\xff"  # type: ignore[union-attr]
    assert await store.delete("containers/a") == 3
    assert await store.get("containers/a") is None
    assert await store.delete("containers/a") is None
    assert await store.revision() == 3  # deleting nothing is not a change


async def test_list_by_prefix_in_key_order(store: SqliteStore) -> None:
    for key in ["containers/b", "containers/a", "containersX", "images/a", "containers/\U0010ffff"]:
        await store.put(key, key)
    listed = [entry.key for entry in await store.list("containers/")]
    assert listed == ["containers/a", "containers/b", "containers/\U0010ffff"]
    assert len(await store.list()) == 5
    assert await store.list("volumes/") == []


async def test_cas_writes_only_on_the_expected_revision(store: SqliteStore) -> None:
    first = await store.cas("leader", "node-1", 0)  # 0: create only if absent
    with pytest.raises(Conflict, match=r'key "leader" changed: expected revision 0, found 1'):
        await store.cas("leader", "node-2", 0)
    second = await store.cas("leader", "node-2", first)
    with pytest.raises(Conflict, match="expected revision 1, found 2"):
        await store.cas("leader", "node-3", first)
    assert (await store.get("leader")).decode(str) == "node-2"  # type: ignore[union-attr]
    assert second == 2


async def test_txn_is_all_or_nothing(store: SqliteStore) -> None:
    await store.put("a", 1)
    revision = await store.txn([Put("b", 2), Put("c", 3), Delete("a")], expect={"a": 1})
    assert revision == 2
    assert [e.key for e in await store.list()] == ["b", "c"]
    assert {e.revision for e in await store.list()} == {2}  # one revision per transaction
    with pytest.raises(Conflict):
        await store.txn([Put("d", 4), Delete("b")], expect={"a": 1})
    assert [e.key for e in await store.list()] == ["b", "c"]
    assert await store.revision() == 2


async def test_watch_sees_committed_changes_under_its_prefix_in_order(store: SqliteStore) -> None:
    async with store.watch("containers/") as changes:
        await store.put("images/x", 1)
        await store.put("containers/a", 1)
        await store.txn([Put("containers/b", 2), Delete("containers/a")])
        got = [await changes.__anext__() for _ in range(3)]
    assert [(c.key, c.deleted, c.revision) for c in got] == [
        ("containers/a", False, 2),
        ("containers/b", False, 3),
        ("containers/a", True, 3),
    ]
    # the change is committed before the watcher hears of it
    assert (await store.get("containers/b")).revision == 3  # type: ignore[union-attr]


async def test_a_watcher_that_falls_behind_is_told_to_list_again(store: SqliteStore) -> None:
    async with store.watch("k/", buffer=2) as changes:
        for n in range(5):
            await store.put(f"k/{n}", n)  # writers never wait for the watcher
        assert (await changes.__anext__()).key == "k/0"
        assert (await changes.__anext__()).key == "k/1"
        with pytest.raises(WatchLagged, match='watch on "k/" fell more than 2 changes behind'):
            await changes.__anext__()


async def test_watch_iteration_ends_when_the_watch_is_left(store: SqliteStore) -> None:
    received = []
    async with trio.open_nursery() as nursery:

        async def follow() -> None:
            async with store.watch("") as changes:
                async for change in changes:
                    received.append(change.key)

        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        await store.put("x", 1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert received == ["x"]
    await store.put("y", 1)  # no watcher left to feed


async def test_a_cancelled_writer_still_commits_and_reports_to_watchers(
    store: SqliteStore,
) -> None:
    async with store.watch("") as changes:
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.put("late", 1)  # cancelled on entry: nothing happens
        assert await store.get("late") is None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.put, "shielded", 1)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        # the commit was under way when the cancel came: it completes and watchers hear of it
        assert await store.get("shielded") is not None
        assert (await changes.__anext__()).key == "shielded"


async def test_values_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with open_sqlite_store(path) as first:
        await first.put("a", {"x": 1})
    async with open_sqlite_store(path) as second:
        assert (await second.get("a")).decode(dict) == {"x": 1}  # type: ignore[union-attr]
        assert await second.revision() == 1
        assert await second.put("b", 2) == 2


async def test_an_unopenable_store_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from carte.api.errors import Unavailable

    with pytest.raises(Unavailable, match=r"cannot open state store .*/missing/state.db"):
        async with open_sqlite_store(tmp_path / "missing" / "state.db"):
            pass
    (tmp_path / "junk.db").write_bytes(b"this is not a database, just junk " * 100)
    with pytest.raises(Unavailable, match="move the damaged file away"):
        async with open_sqlite_store(tmp_path / "junk.db"):
            pass


def test_every_reported_commit_survives_sigkill_and_the_db_is_intact(tmp_path: Path) -> None:
    """A real writer process is SIGKILLed mid-stream; nothing it reported committed is lost."""
    db = tmp_path / "state.db"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    writer = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("store_writer.py")), str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert writer.stdout is not None
    reported = []
    try:
        for line in writer.stdout:
            reported.append(int(line.split()[1]))
            if len(reported) == 300:
                writer.send_signal(signal.SIGKILL)  # mid-stream: it is writing the next put
                break
    finally:
        writer.kill()
        rest, _ = writer.communicate(timeout=30)
    reported.extend(int(line.split()[1]) for line in rest.splitlines())
    assert writer.returncode == -signal.SIGKILL
    assert len(reported) >= 300

    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        stored = {int(key.split("/")[1]) for (key,) in connection.execute("SELECT key FROM kv")}
        (revision,) = connection.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
    finally:
        connection.close()
    assert set(reported) <= stored
    assert stored == set(range(len(stored)))  # no holes: commits are in order
    assert revision == len(stored)
