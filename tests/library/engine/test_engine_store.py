"""The state store, run against both backends (SQLite and a real etcd): the narrow interface,
watch, leases, recovery; plus SQLite's durability across SIGKILL."""

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing
from support import REPO
from support.etcd import EtcdServer, etcd_server

from carte.api.errors import Conflict
from carte.engine import Delete, Put, Store, WatchLagged, open_sqlite_store
from carte.engine.store import LeaseExpired, Resync, follow, hold_lease
from carte.engine.store_etcd import EtcdStore, open_etcd_store

_namespaces = itertools.count()
__all__ = ["etcd_server"]


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the module; each test gets its own key namespace in it."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        async with open_sqlite_store(tmp_path / "state.db") as opened:
            yield opened
    else:
        server: EtcdServer = request.getfixturevalue("shared_etcd")
        namespace = f"test{next(_namespaces)}/"
        async with open_etcd_store([server.endpoint], namespace=namespace) as etcd:
            yield etcd


class Container(msgspec.Struct, frozen=True):
    name: str
    image: str


async def test_put_get_delete(store: Store) -> None:
    base = await store.revision()  # 0 for a new SQLite file, 1 for a new etcd
    assert await store.get("containers/a") is None
    revision = await store.put("containers/a", Container("a", "busybox"))
    entry = await store.get("containers/a")
    assert entry is not None
    assert entry.revision == revision == base + 1
    assert entry.decode(Container) == Container("a", "busybox")
    assert await store.put("raw", b"\x00\xff") == base + 2
    assert (await store.get("raw")).value == b"\x00\xff"  # type: ignore[union-attr]
    assert await store.delete("containers/a") == base + 3
    assert await store.get("containers/a") is None
    assert await store.delete("containers/a") is None
    assert await store.revision() == base + 3  # deleting nothing is not a change


async def test_list_by_prefix_in_key_order(store: Store) -> None:
    for key in ["containers/b", "containers/a", "containersX", "images/a", "containers/\U0010ffff"]:
        await store.put(key, key)
    listed = [entry.key for entry in await store.list("containers/")]
    assert listed == ["containers/a", "containers/b", "containers/\U0010ffff"]
    assert len(await store.list()) == 5
    assert await store.list("volumes/") == []


async def test_cas_writes_only_on_the_expected_revision(store: Store) -> None:
    first = await store.cas("leader", "node-1", 0)  # 0: create only if absent
    with pytest.raises(
        Conflict, match=rf'key "leader" changed: expected revision 0, found {first}'
    ):
        await store.cas("leader", "node-2", 0)
    second = await store.cas("leader", "node-2", first)
    with pytest.raises(Conflict, match=f"expected revision {first}, found {second}"):
        await store.cas("leader", "node-3", first)
    assert (await store.get("leader")).decode(str) == "node-2"  # type: ignore[union-attr]
    assert second == first + 1


async def test_txn_is_all_or_nothing(store: Store) -> None:
    first = await store.put("a", 1)
    revision = await store.txn([Put("b", 2), Put("c", 3), Delete("a")], expect={"a": first})
    assert revision == first + 1
    assert [e.key for e in await store.list()] == ["b", "c"]
    assert {e.revision for e in await store.list()} == {revision}  # one per transaction
    with pytest.raises(Conflict):
        await store.txn([Put("d", 4), Delete("b")], expect={"a": first})
    assert [e.key for e in await store.list()] == ["b", "c"]
    assert await store.revision() == revision


async def test_watch_sees_committed_changes_under_its_prefix_in_order(store: Store) -> None:
    async with store.watch("containers/") as changes:
        base = await store.put("images/x", 1)
        await store.put("containers/a", 1)
        await store.txn([Put("containers/b", 2), Delete("containers/a")])
        got = [await changes.__anext__() for _ in range(3)]
    assert [(c.key, c.deleted, c.revision) for c in got] == [
        ("containers/a", False, base + 1),
        ("containers/b", False, base + 2),
        ("containers/a", True, base + 2),
    ]
    # the change is committed before the watcher hears of it
    assert (await store.get("containers/b")).revision == base + 2  # type: ignore[union-attr]


async def test_a_watcher_that_falls_behind_is_told_to_list_again(store: Store) -> None:
    async with store.watch("k/", buffer=2) as changes:
        for n in range(5):
            await store.put(f"k/{n}", n)  # writers never wait for the watcher
        await trio.sleep(0.3)  # etcd's stream delivers the five changes meanwhile
        assert (await changes.__anext__()).key == "k/0"
        assert (await changes.__anext__()).key == "k/1"
        with pytest.raises(WatchLagged, match='watch on "k/" fell more than 2 changes behind'):
            await changes.__anext__()


async def test_watch_iteration_ends_when_the_watch_is_left(store: Store) -> None:
    received = []
    heard = trio.Event()
    async with trio.open_nursery() as nursery:

        async def read_changes(*, task_status: trio.TaskStatus[None]) -> None:
            async with store.watch("") as changes:
                task_status.started()
                async for change in changes:
                    received.append(change.key)
                    heard.set()

        await nursery.start(read_changes)
        await store.put("x", 1)
        with trio.fail_after(5):
            await heard.wait()
        nursery.cancel_scope.cancel()
    assert received == ["x"]
    await store.put("y", 1)  # no watcher left to feed


async def test_a_cancelled_writer_still_commits_and_reports_to_watchers(
    store: Store,
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


async def test_lease_expiry_removes_its_keys_and_tells_watchers(store: Store) -> None:
    lease = await store.grant_lease(1)  # etcd rounds a TTL up to its minimum, 2 s here
    async with store.watch("nodes/") as changes:
        await store.put("nodes/a", {"cpu": 2}, lease=lease)
        await store.put("nodes/b", {"cpu": 4})  # no lease: stays
        await store.put("other", 1, lease=lease)
        assert not (await changes.__anext__()).deleted
        assert not (await changes.__anext__()).deleted
        with trio.fail_after(6):
            gone = await changes.__anext__()
    assert (gone.key, gone.deleted) == ("nodes/a", True)
    assert [e.key for e in await store.list()] == ["nodes/b"]
    with pytest.raises(LeaseExpired, match="expired or was revoked"):
        await store.keep_alive(lease)
    with pytest.raises(LeaseExpired):
        await store.put("nodes/c", 1, lease=lease)
    assert await store.get("nodes/c") is None


async def test_a_held_lease_keeps_its_keys_until_released(store: Store) -> None:
    async with hold_lease(store, 2) as lease:
        await store.put("nodes/a", "up", lease=lease)
        await trio.sleep(3.5)  # past the TTL: the keep-alive task renewed it
        assert await store.get("nodes/a") is not None
    assert await store.get("nodes/a") is None  # leaving the block revokes it at once


async def test_a_watch_from_a_compacted_revision_recovers_by_listing(
    store: Store, tmp_path: Path
) -> None:
    async def compact() -> None:
        if isinstance(store, EtcdStore):
            await store.put("noise", 0)
            await store.compact(await store.revision())  # keeps only the latest revision
        else:  # SQLite forgets all but its last `history` changes
            for n in range(5):
                await store.put("noise", n)

    if not isinstance(store, EtcdStore):
        async with open_sqlite_store(tmp_path / "small.db", history=2) as small:
            store = small
            await run_compaction_case(store, compact)
    else:
        await run_compaction_case(store, compact)


async def run_compaction_case(store: Store, compact: Callable[[], Awaitable[None]]) -> None:
    await store.put("jobs/1", "a")
    _, revision = await store.snapshot("jobs/")
    await store.put("jobs/2", "b")
    await compact()
    async with store.watch("jobs/", since=revision) as changes:
        with pytest.raises(WatchLagged, match=f"from revision {revision}: compacted"):
            await changes.__anext__()
    async with follow(store, "jobs/") as events:
        with trio.fail_after(5):
            first = await events.receive()
            assert isinstance(first, Resync)
            assert [(e.key, e.value) for e in first.entries] == [
                ("jobs/1", b'"a"'),
                ("jobs/2", b'"b"'),
            ]
            await store.put("jobs/3", "c")
            change = await events.receive()
    assert not isinstance(change, Resync)
    assert change.key == "jobs/3"


async def test_stopped_etcd_makes_calls_unavailable_and_a_restart_works_again(
    etcd_server: EtcdServer,
) -> None:
    from carte.api.errors import Unavailable
    from carte.engine.store import retry_unavailable

    async with open_etcd_store([etcd_server.endpoint]) as store, follow(store, "k/") as events:
        with trio.fail_after(20):
            assert isinstance(await events.receive(), Resync)
            await store.put("k/a", 1)
            assert (await events.receive()).key == "k/a"  # type: ignore[union-attr]

            await trio.to_thread.run_sync(etcd_server.stop)
            with pytest.raises(Unavailable) as raised:
                await store.put("k/b", 2)
            message = raised.value.message
            assert "\n" not in message
            assert message.startswith(f"etcd is unreachable at {etcd_server.endpoint} (")
            assert message.endswith(
                "check that etcd runs and store.endpoints in carte.yaml, then retry"
            )

            async def restart() -> None:
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(etcd_server.start)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart)
                revision = await retry_unavailable(lambda: store.put("k/b", 2), maximum=0.5)
            assert (await store.get("k/b")).revision == revision  # type: ignore[union-attr]
            # the follower lost its watch with etcd, listed again and goes on
            view: set[str] = {"k/a"}
            resynced = False
            while not (resynced and view == {"k/a", "k/b"}):
                event = await events.receive()
                if isinstance(event, Resync):
                    resynced, view = True, {e.key for e in event.entries}
                else:
                    view.add(event.key)
            await store.put("k/c", 3)
            assert (await events.receive()).key == "k/c"  # type: ignore[union-attr]


async def test_etcd_over_mutual_tls_with_the_cluster_pki(tmp_path: Path) -> None:
    """etcd serves https and asks for client certificates, both from carte.cluster's CA."""
    from carte.api.errors import Unavailable
    from carte.cluster import ClusterCA, write_bundle
    from carte.engine.store_etcd import tls_context

    ca = ClusterCA.create()
    server = ca.issue_server("etcd", ["127.0.0.1"])
    client = ca.issue_client("carte-daemon")
    assert server.key is not None and client.key is not None
    write_bundle(tmp_path / "server", ca=ca.cert_pem, cert=server.cert, key=server.key)
    write_bundle(tmp_path / "client", ca=ca.cert_pem, cert=client.cert, key=client.key)
    etcd = EtcdServer(tmp_path / "etcd", tls=tmp_path / "server")
    (tmp_path / "etcd").mkdir()
    await trio.to_thread.run_sync(etcd.start)
    try:
        files = tmp_path / "client"
        context = tls_context(
            str(files / "ca.pem"), str(files / "cert.pem"), str(files / "key.pem")
        )
        async with open_etcd_store([etcd.endpoint], tls=context) as store:
            async with store.watch("k/") as changes:
                revision = await store.put("k/a", 1)
                assert (await changes.__anext__()).revision == revision
        anonymous = tls_context(str(files / "ca.pem"))  # trusts etcd, presents no certificate
        async with open_etcd_store([etcd.endpoint], tls=anonymous) as store:
            with pytest.raises(Unavailable, match="etcd"):
                await store.get("k/a")
    finally:
        await trio.to_thread.run_sync(etcd.close)


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
    repo = REPO
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
