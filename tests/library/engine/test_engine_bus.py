"""The bus: fact fan-out, ordering, backpressure, request/reply and the journal."""

from typing import ClassVar

import pytest
import trio
import trio.testing

from carte.api.errors import Internal, InvalidArgument, Unavailable
from carte.api.events import Command, Fact, Ping
from carte.engine import Bus


class Tick(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "test.tick"
    n: int


class Tock(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "test.tock"
    n: int


class Double(Command[int], frozen=True, kw_only=True):
    n: int


class Orphan(Command[None], frozen=True, kw_only=True):
    pass


async def test_each_subscriber_gets_every_fact_in_publication_order() -> None:
    bus = Bus(subscriber_buffer=100)
    async with bus.subscribe(Tick) as first, bus.subscribe(Tick) as second:
        for n in range(50):
            await bus.publish(Tick(n=n))
        got_first = [first.receive_nowait() for _ in range(50)]
        got_second = [second.receive_nowait() for _ in range(50)]
    assert [fact.n for fact in got_first] == list(range(50))  # type: ignore[attr-defined]
    assert [fact.n for fact in got_second] == list(range(50))  # type: ignore[attr-defined]


async def test_subscribers_only_get_the_types_they_asked_for() -> None:
    bus = Bus()
    async with bus.subscribe(Tick) as ticks, bus.subscribe() as everything:
        await bus.publish(Tock(n=1))
        await bus.publish(Tick(n=2))
        assert isinstance(ticks.receive_nowait(), Tick)
        with pytest.raises(trio.WouldBlock):
            ticks.receive_nowait()
        assert [type(everything.receive_nowait()) for _ in range(2)] == [Tock, Tick]


async def test_concurrent_publishers_are_seen_in_the_same_order_by_all_subscribers() -> None:
    bus = Bus(subscriber_buffer=1)
    seen: list[list[int]] = [[], [], []]

    async def consume(index: int, facts: trio.MemoryReceiveChannel[Fact]) -> None:
        async for fact in facts:
            assert isinstance(fact, Tick)
            seen[index].append(fact.n)

    async def produce(base: int) -> None:
        for n in range(base, base + 30):
            await bus.publish(Tick(n=n))

    async with bus.subscribe(Tick) as a, bus.subscribe(Tick) as b, bus.subscribe(Tick) as c:
        async with trio.open_nursery() as consumers:
            for index, channel in enumerate((a, b, c)):
                consumers.start_soon(consume, index, channel)
            async with trio.open_nursery() as producers:
                for base in (0, 100, 200):
                    producers.start_soon(produce, base)
            await trio.testing.wait_all_tasks_blocked()
            consumers.cancel_scope.cancel()
    journal_order = [fact.n for fact in bus.journal.since()]  # type: ignore[attr-defined]
    assert len(journal_order) == 90
    assert seen[0] == seen[1] == seen[2] == journal_order
    for base in (0, 100, 200):  # each publisher's own facts stay in its order
        assert [n for n in journal_order if base <= n < base + 30] == list(range(base, base + 30))


async def test_a_full_subscriber_blocks_the_publisher_until_it_catches_up() -> None:
    bus = Bus()
    published = []
    async with bus.subscribe(Tick, buffer=1) as slow, trio.open_nursery() as nursery:
        await bus.publish(Tick(n=0))  # fills the buffer

        async def publish_one_more() -> None:
            await bus.publish(Tick(n=1))
            published.append(1)

        nursery.start_soon(publish_one_more)
        await trio.testing.wait_all_tasks_blocked()
        assert published == []  # the publisher is waiting on the slow subscriber
        assert slow.receive_nowait().n == 0  # type: ignore[attr-defined]
        await trio.testing.wait_all_tasks_blocked()
        assert published == [1]
        assert slow.receive_nowait().n == 1  # type: ignore[attr-defined]


async def test_leaving_a_subscription_unblocks_a_waiting_publisher() -> None:
    bus = Bus()
    async with trio.open_nursery() as nursery:
        async with bus.subscribe(Tick, buffer=0):
            nursery.start_soon(bus.publish, Tick(n=1))
            await trio.testing.wait_all_tasks_blocked()
            assert bus.subscriber_count == 1
        await trio.testing.wait_all_tasks_blocked()
    assert bus.subscriber_count == 0
    assert len(bus.journal) == 1


async def test_subscription_ends_when_the_subscriber_is_cancelled() -> None:
    bus = Bus()
    with trio.move_on_after(0.01):
        async with bus.subscribe(Tick) as ticks:
            await ticks.receive()
    assert bus.subscriber_count == 0
    await bus.publish(Tick(n=1))  # nobody left to block on


async def test_subscribe_rejects_commands() -> None:
    bus = Bus()
    with pytest.raises(TypeError, match="Fact classes"):
        async with bus.subscribe(Double):  # type: ignore[arg-type]
            pass


async def test_request_returns_the_typed_result_of_the_owner() -> None:
    bus = Bus()

    async def double(command: Double) -> int:
        return command.n * 2

    bus.attach("math", {Double: double})
    assert await bus.request(Double(n=21)) == 42
    assert await bus.request(Ping()) == "pong"


async def test_request_raises_the_handlers_typed_error() -> None:
    bus = Bus()

    async def refuse(command: Double) -> int:
        raise InvalidArgument(f"n={command.n} is odd; pass an even number")

    bus.attach("math", {Double: refuse})
    with pytest.raises(InvalidArgument, match="n=3 is odd"):
        await bus.request(Double(n=3))


async def test_request_turns_an_unexpected_exception_into_internal() -> None:
    bus = Bus()

    async def broken(command: Double) -> int:
        raise ZeroDivisionError("oops")

    bus.attach("math", {Double: broken})
    with pytest.raises(Internal, match=r'handler "math" failed on command "Double".*oops'):
        await bus.request(Double(n=1))


async def test_unknown_or_detached_command_is_unavailable_at_once() -> None:
    bus = Bus()
    with pytest.raises(Unavailable, match='no handler answers command "Orphan"'):
        await bus.request(Orphan())
    bus.declare_owner(Double, "math")
    with pytest.raises(Unavailable, match='handler "math" has not started yet'):
        await bus.request(Double(n=1))
    bus.detach("math", "crashed and restarts in 2s")
    with pytest.raises(Unavailable, match="crashed and restarts in 2s"):
        await bus.request(Double(n=1))


def test_two_owners_of_one_command_are_named() -> None:
    bus = Bus()
    bus.declare_owner(Double, "math")
    with pytest.raises(Internal, match='both handler "math" and handler "algebra"'):
        bus.declare_owner(Double, "algebra")


async def test_journal_keeps_the_newest_facts_and_filters_by_time_and_type() -> None:
    bus = Bus(journal_size=5)
    for n in range(8):
        await bus.publish(Tick(n=n, time=float(n)))
    await bus.publish(Tock(n=99, time=100.0))
    assert [f.n for f in bus.journal.since()] == [4, 5, 6, 7, 99]  # type: ignore[attr-defined]
    assert [f.n for f in bus.journal.since(6.0)] == [6, 7, 99]  # type: ignore[attr-defined]
    assert [f.n for f in bus.journal.since(0, [Tock])] == [99]  # type: ignore[attr-defined]
    assert len(bus.journal.since(0, ["Tick"])) == 4
    assert len(bus.journal.since(0, ["test.tock"])) == 1
    bus.journal.resize(2)
    assert [f.n for f in bus.journal.since()] == [7, 99]  # type: ignore[attr-defined]


async def test_a_typed_error_from_inside_a_handlers_nursery_keeps_its_type() -> None:
    bus = Bus()

    async def with_nursery(command: Double) -> int:
        async def refuse() -> None:
            raise InvalidArgument("n must be positive; pass n > 0")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refuse)
        return 0

    bus.attach("math", {Double: with_nursery})
    with pytest.raises(InvalidArgument, match="n must be positive"):
        await bus.request(Double(n=-1))
