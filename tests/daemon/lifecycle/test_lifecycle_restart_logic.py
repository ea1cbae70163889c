"""Restart policies on a mock clock: the real restart handler on a real bus and supervisor,
next to a stand-in containers handler and an in-memory store.

Both stand-ins are test doubles (this file only), because the real things cannot run on trio's
MockClock: real containers take real time, and the SQLite store works in worker threads, during
which an autojumping clock leaps to the next deadline, so "nothing happened within 60 s" would
prove nothing. `FakeContainers` answers the containers handler's commands from memory;
`MemoryStore` keeps keys in a dict. The same rules run against a real daemon (real containers,
SQLite) in test_lifecycle_restart_daemon.py.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from carte.api.containers import (
    ContainerConfig,
    ContainerDetails,
    ContainerState,
    ContainerSummary,
    RestartPolicy,
)
from carte.api.errors import Conflict, NotFound
from carte.api.events import (
    ContainerExited,
    ContainerRestarting,
    ContainerStarted,
    InspectContainer,
    ListContainers,
    SetContainerRestarting,
    StartContainer,
)
from carte.engine import (
    Bus,
    Config,
    Entry,
    Handler,
    HandlerContext,
    Roster,
    Supervisor,
    apply_overrides,
    on,
)
from carte.engine.store import encode_value
from carte.handlers.containers import RestartBackoffOptions
from carte.handlers.lifecycle._restart import DAEMON_PID, RestartHandler
from carte.handlers.lifecycle._restart_policy import RestartBackoff, restart_wanted

EPOCH = 1_800_000_000.0


def _stamp() -> str:
    moment = datetime.datetime.fromtimestamp(EPOCH + trio.current_time(), datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


class FakeContainers(Handler):
    """TEST DOUBLE: the containers handler's commands over an in-memory table (see module
    docstring). `starts` records (clock time, id) of every StartContainer."""

    name = "containers"
    table: dict[str, ContainerDetails] = {}
    starts: list[tuple[float, str]] = []
    started = trio.Event()

    @classmethod
    def reset(cls) -> None:
        cls.table, cls.starts, cls.started = {}, [], trio.Event()

    @classmethod
    def add(cls, container_id: str, policy: RestartPolicy) -> None:
        cls.table[container_id] = ContainerDetails(
            id=container_id,
            name=f"name-{container_id}",
            created=_stamp(),
            image="busybox",
            image_id="sha256:0",
            config=ContainerConfig(image="busybox", restart=policy),
            state=ContainerState(status="created"),
        )

    @on(ListContainers)
    async def list_containers(self, command: ListContainers) -> list[ContainerSummary]:
        return [
            ContainerSummary(
                id=d.id,
                name=d.name,
                image=d.image,
                command="",
                created=d.created,
                state=d.state.status,
                status="",
            )
            for d in self.table.values()
        ]

    @on(InspectContainer)
    async def inspect(self, command: InspectContainer) -> ContainerDetails:
        if command.ref not in self.table:
            raise NotFound(f"no such container {command.ref}")
        return self.table[command.ref]

    @on(StartContainer)
    async def start(self, command: StartContainer) -> None:
        details = await self.inspect(InspectContainer(ref=command.ref))
        state = ContainerState(status="running", running=True, started_at=_stamp())
        self.table[details.id] = msgspec.structs.replace(details, state=state)
        FakeContainers.starts.append((trio.current_time(), details.id))
        FakeContainers.started.set()
        FakeContainers.started = trio.Event()
        await self.ctx.bus.publish(ContainerStarted(id=details.id, name=details.name, pid=1))

    @on(SetContainerRestarting)
    async def set_restarting(self, command: SetContainerRestarting) -> None:
        details = await self.inspect(InspectContainer(ref=command.ref))
        if details.state.status != "exited":
            raise Conflict("not exited")
        state = msgspec.structs.replace(details.state, status="restarting", restarting=True)
        self.table[details.id] = msgspec.structs.replace(
            details, state=state, restart_count=command.restart_count
        )


async def exit_container(
    bus: Bus, container_id: str, code: int, *, requested: bool = False
) -> None:
    details = FakeContainers.table[container_id]
    state = msgspec.structs.replace(
        details.state, status="exited", running=False, exit_code=code, finished_at=_stamp()
    )
    FakeContainers.table[container_id] = msgspec.structs.replace(details, state=state)
    await bus.publish(
        ContainerExited(id=container_id, name=details.name, exit_code=code, requested=requested)
    )


BACKOFF = {"handlers.options.restart": {"restart": {"base": 1.0, "cap": 4.0, "reset": 30.0}}}


class MemoryStore:
    """TEST DOUBLE: get/put/delete of the store interface over a dict (see module docstring)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.revision = 0

    async def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    async def put(self, key: str, value: object) -> int:
        self.revision += 1
        self.entries[key] = Entry(key=key, value=encode_value(value), revision=self.revision)
        return self.revision

    async def delete(self, key: str) -> int | None:
        return self.revision if self.entries.pop(key, None) is not None else None


@asynccontextmanager
async def engine(db: Path, store: MemoryStore | None = None) -> AsyncIterator[Bus]:
    """A bus with FakeContainers and the real RestartHandler running (one "daemon life")."""
    config = apply_overrides(Config(), BACKOFF)
    bus = Bus()
    ctx = HandlerContext(
        bus=bus,
        store=store or MemoryStore(),  # type: ignore[arg-type]
        config=config,
        root=db.parent,
        run_root=db.parent / "run",
    )
    supervisor = Supervisor(Roster([FakeContainers, RestartHandler]).plan(), ctx)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield bus
        nursery.cancel_scope.cancel()


async def _next_start(starts_before: int) -> tuple[float, str]:
    while len(FakeContainers.starts) <= starts_before:
        await FakeContainers.started.wait()
    return FakeContainers.starts[starts_before]


async def test_on_failure_backs_off_and_stops_after_max(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    FakeContainers.reset()
    FakeContainers.add("c1", RestartPolicy(name="on-failure", maximum_retry_count=3))
    async with engine(tmp_path / "state.db") as bus, bus.subscribe(ContainerRestarting) as facts:
        await bus.request(StartContainer(ref="c1"))
        delays = []
        for n in range(3):
            crashed_at = trio.current_time()
            await exit_container(bus, "c1", 3)
            started_at, _ = await _next_start(n + 1)
            delays.append(round(started_at - crashed_at, 2))
            fact = await facts.receive()
            assert isinstance(fact, ContainerRestarting) and fact.restart_count == n + 1
        assert delays == [1.0, 2.0, 4.0]
        assert FakeContainers.table["c1"].restart_count == 3
        await exit_container(bus, "c1", 3)
        await trio.sleep(60)
        assert len(FakeContainers.starts) == 4  # the user's start and three restarts
        assert FakeContainers.table["c1"].state.status == "exited"


async def test_always_caps_the_delay_and_resets_after_a_long_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    FakeContainers.reset()
    FakeContainers.add("c2", RestartPolicy(name="always"))
    async with engine(tmp_path / "state.db") as bus, bus.subscribe(ContainerRestarting) as facts:
        await bus.request(StartContainer(ref="c2"))
        seen = []
        for n in range(5):
            await exit_container(bus, "c2", 0)
            fact = await facts.receive()
            assert isinstance(fact, ContainerRestarting)
            seen.append(fact.delay)
            await _next_start(n + 1)
        assert seen == [1.0, 2.0, 4.0, 4.0, 4.0]
        await trio.sleep(31)  # a run longer than `reset`
        await exit_container(bus, "c2", 0)
        fact = await facts.receive()
        assert isinstance(fact, ContainerRestarting) and fact.delay == 1.0


async def test_a_user_stop_is_not_restarted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    FakeContainers.reset()
    FakeContainers.add("c3", RestartPolicy(name="always"))
    async with engine(tmp_path / "state.db") as bus:
        await bus.request(StartContainer(ref="c3"))
        await exit_container(bus, "c3", 143, requested=True)
        await trio.sleep(60)
        assert len(FakeContainers.starts) == 1


async def test_a_user_start_resets_the_retry_count(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    FakeContainers.reset()
    FakeContainers.add("c4", RestartPolicy(name="on-failure", maximum_retry_count=1))
    async with engine(tmp_path / "state.db") as bus:
        await bus.request(StartContainer(ref="c4"))
        await exit_container(bus, "c4", 1)
        await _next_start(1)
        await exit_container(bus, "c4", 1)
        await trio.sleep(60)
        assert len(FakeContainers.starts) == 2
        await bus.request(StartContainer(ref="c4"))  # the user's start
        await exit_container(bus, "c4", 1)
        await _next_start(3)


async def _one_life_then_a_crash_while_down(tmp_path: Path, store: MemoryStore) -> None:
    """Four containers in one daemon life: "always" and "unless" stopped by the user, "never"
    exits; then, with no restart handler running, "crashed" dies (nobody sees the fact)."""
    FakeContainers.reset()
    for cid, policy in [
        ("always", "always"),
        ("unless", "unless-stopped"),
        ("crashed", "unless-stopped"),
        ("never", "no"),
    ]:
        FakeContainers.add(cid, RestartPolicy(name=policy))  # type: ignore[arg-type]
    async with engine(tmp_path / "state.db", store) as bus:
        for cid in FakeContainers.table:
            await bus.request(StartContainer(ref=cid))
        await exit_container(bus, "always", 143, requested=True)
        await exit_container(bus, "unless", 143, requested=True)
        await exit_container(bus, "never", 0)
        await trio.sleep(60)
    crashed = FakeContainers.table["crashed"]
    state = msgspec.structs.replace(crashed.state, status="exited", exit_code=137)
    FakeContainers.table["crashed"] = msgspec.structs.replace(crashed, state=state)
    FakeContainers.starts.clear()


async def test_daemon_start_brings_back_always_but_not_stopped_unless_stopped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = MemoryStore()
    await _one_life_then_a_crash_while_down(tmp_path, store)
    del store.entries[DAEMON_PID]  # the next life is a new daemon process
    async with engine(tmp_path / "state.db", store):
        await trio.sleep(1)
        assert sorted(cid for _, cid in FakeContainers.starts) == ["always", "crashed"]


async def test_a_restarted_handler_is_not_a_daemon_start(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The handler crashed and came back in the same daemon process: it restarts the crash it
    missed, but a user-stopped "always" container stays stopped."""
    store = MemoryStore()
    await _one_life_then_a_crash_while_down(tmp_path, store)
    async with engine(tmp_path / "state.db", store):
        await trio.sleep(1)
        assert [cid for _, cid in FakeContainers.starts] == ["crashed"]


@pytest.mark.parametrize(
    ("policy", "code", "stopped", "count", "daemon_start", "expected"),
    [
        ("no", 1, False, 0, False, False),
        ("on-failure", 0, False, 0, False, False),
        ("on-failure", 1, False, 0, False, True),
        ("on-failure", 1, False, 2, False, False),
        ("on-failure", 1, True, 0, False, False),
        ("always", 0, False, 99, False, True),
        ("always", 0, True, 0, False, False),
        ("always", 0, True, 0, True, True),
        ("unless-stopped", 0, True, 0, True, False),
        ("unless-stopped", 1, False, 0, True, True),
    ],
)
def test_restart_wanted(
    policy: str, code: int, stopped: bool, count: int, daemon_start: bool, expected: bool
) -> None:
    rule = RestartPolicy(name=policy, maximum_retry_count=2)  # type: ignore[arg-type]
    wanted = restart_wanted(
        rule,
        exit_code=code,
        stopped_by_user=stopped,
        restart_count=count,
        daemon_start=daemon_start,
    )
    assert wanted is expected


def test_backoff_defaults_are_dockers_sequence_in_the_issue() -> None:
    config, backoff = RestartBackoffOptions(), RestartBackoff()
    delays = [backoff.next_delay(config, ran_for=1) for _ in range(7)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert backoff.next_delay(config, ran_for=600) == 10
