"""The supervisor: start order, skips, fact delivery, crash restart with backoff, shutdown."""

from itertools import pairwise
from typing import ClassVar

import pytest
import trio
import trio.testing

from carte.api.errors import Unavailable
from carte.api.events import Command, Fact, HandlerCrashed, HandlerSkipped, HandlerStarted
from carte.engine import Handler, HandlerContext, HandlerState, Roster, Supervisor, on


class Echo(Command[str], frozen=True, kw_only=True):
    text: str


class Fragile(Command[int], frozen=True, kw_only=True):
    pass


class Poke(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "test.poke"
    n: int


class Steady(Handler):
    name = "steady"

    @on(Echo)
    async def echo(self, command: Echo) -> str:
        return command.text


class Crashy(Handler):
    """Serves `Fragile` and crashes (in run) whenever the test sets `crash`."""

    name = "crashy"
    starts: ClassVar[list[float]] = []
    crash: ClassVar[trio.Event]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        Crashy.starts.append(trio.current_time())
        task_status.started()
        await Crashy.crash.wait()
        raise RuntimeError("lost the plot")

    @on(Fragile)
    async def fragile(self, command: Fragile) -> int:
        return len(Crashy.starts)


async def test_a_crashing_handler_restarts_with_backoff_while_others_keep_serving(
    engine_ctx: HandlerContext, autojump_clock: trio.testing.MockClock
) -> None:
    bus = engine_ctx.bus
    Crashy.starts = []
    Crashy.crash = trio.Event()
    supervisor = Supervisor(Roster([Steady, Crashy]).plan(), engine_ctx)
    async with (
        bus.subscribe(HandlerCrashed) as crashes,
        bus.subscribe(HandlerStarted) as starts,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(supervisor.run)
        assert await bus.request(Fragile()) == 1

        Crashy.crash.set()  # every life of Crashy now crashes right after starting
        crash = await crashes.receive()
        assert isinstance(crash, HandlerCrashed)
        assert (crash.id, crash.error, crash.restart_in) == (
            "crashy",
            "RuntimeError: lost the plot",
            0.1,
        )
        # While it waits to restart, its command fails fast and the other handler serves on.
        with pytest.raises(Unavailable, match=r'"crashy" crashed .*restarts in 0.1s'):
            await bus.request(Fragile())
        assert await bus.request(Echo(text="still here")) == "still here"

        delays = [(await crashes.receive()).restart_in for _ in range(4)]  # type: ignore[attr-defined]
        assert delays == [0.2, 0.4, 0.8, 1.6]
        gaps = [later - earlier for earlier, later in pairwise(Crashy.starts)]
        assert gaps == pytest.approx([0.1, 0.2, 0.4, 0.8])
        status = supervisor.status("crashy")
        assert status is not None
        assert status.state is HandlerState.RESTARTING
        assert status.restarts == 5

        while True:  # forget the earlier lives' announcements
            try:
                starts.receive_nowait()
            except trio.WouldBlock:
                break
        Crashy.crash = trio.Event()  # the next life survives
        with trio.fail_after(60):
            while (await starts.receive()).id != "crashy":
                pass
        assert await bus.request(Fragile()) == 6
        nursery.cancel_scope.cancel()


async def test_backoff_is_capped(
    engine_ctx: HandlerContext, autojump_clock: trio.testing.MockClock
) -> None:
    Crashy.starts = []
    Crashy.crash = trio.Event()
    Crashy.crash.set()
    supervisor = Supervisor(Roster([Crashy]).plan(), engine_ctx)
    async with engine_ctx.bus.subscribe(HandlerCrashed) as crashes, trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        delays = [(await crashes.receive()).restart_in for _ in range(12)]  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert max(delays) == 30.0
    assert delays[-1] == 30.0


class Listener(Handler):
    """Records facts in order; crashes on a Poke with n < 0."""

    name = "listener"
    seen: ClassVar[list[int]] = []

    @on(Poke)
    async def poked(self, fact: Poke) -> None:
        if fact.n < 0:
            raise ValueError(f"negative poke {fact.n}")
        Listener.seen.append(fact.n)


async def test_fact_methods_get_facts_in_order_and_a_raising_one_is_restarted(
    engine_ctx: HandlerContext, autojump_clock: trio.testing.MockClock
) -> None:
    bus = engine_ctx.bus
    Listener.seen = []
    supervisor = Supervisor(Roster([Listener]).plan(), engine_ctx)
    async with bus.subscribe(HandlerCrashed, HandlerStarted) as lifecycle:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            assert isinstance(await lifecycle.receive(), HandlerStarted)
            for n in range(20):
                await bus.publish(Poke(n=n))
            await bus.publish(Poke(n=-1))
            crash = await lifecycle.receive()
            assert isinstance(crash, HandlerCrashed)
            assert crash.error == "ValueError: negative poke -1"
            assert isinstance(await lifecycle.receive(), HandlerStarted)
            await bus.publish(Poke(n=100))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert Listener.seen == [*range(20), 100]


class NeedsKernelThing(Handler):
    name = "needy"

    async def check(self) -> str | None:
        return "kernel lacks the frobnicator; load module frob"

    @on(Fragile)
    async def fragile(self, command: Fragile) -> int:
        return 0


class Dependent(Handler):
    name = "dependent"
    requires = ("needy",)


async def test_a_handler_can_skip_itself_and_its_dependents_are_skipped_too(
    engine_ctx: HandlerContext,
) -> None:
    bus = engine_ctx.bus
    supervisor = Supervisor(Roster([Dependent, NeedsKernelThing, Steady]).plan(), engine_ctx)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        states = {s.name: (s.state, s.reason) for s in supervisor.statuses()}
        assert states["needy"] == (
            HandlerState.SKIPPED,
            "kernel lacks the frobnicator; load module frob",
        )
        assert states["dependent"][0] is HandlerState.SKIPPED
        assert 'requires "needy", which was skipped' in states["dependent"][1]
        assert states["steady"][0] is HandlerState.RUNNING
        with pytest.raises(Unavailable, match="skipped: kernel lacks the frobnicator"):
            await bus.request(Fragile())
        skipped = {fact.id for fact in bus.journal.since(0, [HandlerSkipped])}
        assert skipped == {"needy", "dependent"}
        nursery.cancel_scope.cancel()


class Server(Handler):
    """A long-lived run() that must see cancellation and clean up."""

    name = "server"
    cleaned_up: ClassVar[bool] = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            Server.cleaned_up = True


async def test_cancelling_the_supervisor_stops_handlers_without_a_crash(
    engine_ctx: HandlerContext,
) -> None:
    Server.cleaned_up = False
    supervisor = Supervisor(Roster([Server]).plan(), engine_ctx)
    with trio.move_on_after(1) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            assert supervisor.status("server").state is HandlerState.RUNNING  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert Server.cleaned_up
    assert engine_ctx.bus.journal.since(0, [HandlerCrashed]) == []


async def test_handlers_get_their_own_options_and_reconfigure_swaps_them(
    engine_ctx: HandlerContext,
) -> None:
    import msgspec

    from carte.engine import Config
    from carte.engine.config import HandlerOptions

    seen: list[object] = []

    class OptionedOptions(HandlerOptions, frozen=True, kw_only=True):
        url: str = ""

    class Optioned(Handler):
        name = "optioned"
        Options = OptionedOptions

        @on(Echo)
        async def echo(self, command: Echo) -> str:
            seen.append(self.ctx.options)
            return self.ctx.log.name

    config = msgspec.convert({"handlers": {"options": {"optioned": {"url": "a"}}}}, Config)
    engine_ctx.config = config
    supervisor = Supervisor(Roster([Optioned]).plan(), engine_ctx)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        assert await engine_ctx.bus.request(Echo(text="")) == "carte.handler.optioned"
        supervisor.reconfigure(
            msgspec.convert({"handlers": {"options": {"optioned": {"url": "b"}}}}, Config)
        )
        await engine_ctx.bus.request(Echo(text=""))
        nursery.cancel_scope.cancel()
    assert seen == [OptionedOptions(url="a"), OptionedOptions(url="b")]


class BrokenAtBirth(Handler):
    """Its check() raises until `healthy` is set: a crash, retried with backoff."""

    name = "broken"
    healthy: ClassVar[bool] = False
    checks: ClassVar[int] = 0

    async def check(self) -> str | None:
        BrokenAtBirth.checks += 1
        if not BrokenAtBirth.healthy:
            raise OSError("cannot read /proc/self/ns")
        return None

    @on(Fragile)
    async def fragile(self, command: Fragile) -> int:
        return BrokenAtBirth.checks


class AfterBroken(Handler):
    name = "after"
    requires = ("broken",)

    @on(Echo)
    async def echo(self, command: Echo) -> str:
        return "after"


async def test_a_handler_failing_its_first_start_does_not_hold_up_the_daemon(
    engine_ctx: HandlerContext, autojump_clock: trio.testing.MockClock
) -> None:
    BrokenAtBirth.healthy = False
    BrokenAtBirth.checks = 0
    bus = engine_ctx.bus
    supervisor = Supervisor(Roster([BrokenAtBirth, AfterBroken]).plan(), engine_ctx)
    async with (
        bus.subscribe(HandlerCrashed) as crashes,
        bus.subscribe(HandlerStarted) as starts,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(supervisor.run)  # returns although "broken" failed to start
        assert await bus.request(Echo(text="")) == "after"
        first = await crashes.receive()
        assert isinstance(first, HandlerCrashed)
        assert first.error == "OSError: cannot read /proc/self/ns"
        with pytest.raises(Unavailable, match='"broken" crashed'):
            await bus.request(Fragile())
        BrokenAtBirth.healthy = True
        while (await starts.receive()).id != "broken":
            pass
        assert await bus.request(Fragile()) >= 2
        nursery.cancel_scope.cancel()
