"""The bus's side of handler routes and start-up: commands and routes wait for a starting
handler (bounded), fail fast for one that is down, and name it; route declarations of every
installed handler, disabled ones included; readiness once every handler had its first start."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from carte.api.errors import Unavailable
from carte.api.events import Command
from carte.engine import Bus, Handler, HandlerContext, Roster, Supervisor, on
from carte.engine.config import Config
from carte.engine.handler import Route
from carte.engine.store import open_sqlite_store


class Shout(Command[str], frozen=True, kw_only=True):
    word: str


async def _serve_echo(handler: Any, **params: Any) -> str:
    return f"{handler.name}:{params}"


class Loud(Handler):
    name = "loud"
    routes = (Route("GET", "/v1/loud/<word>", _serve_echo),)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(5)  # a slow start
        task_status.started()

    @on(Shout)
    async def shout(self, command: Shout) -> str:
        return command.word.upper()


class Quiet(Handler):
    name = "quiet"
    routes = (Route("POST", "/v1/quiet", _serve_echo, upload=True),)


async def test_a_command_waits_for_its_starting_owner() -> None:
    bus = Bus()
    bus.declare_owner(Shout, "loud")
    bus.starting("loud")
    answers: list[str] = []

    async def ask() -> None:
        answers.append(await bus.request(Shout(word="hi")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []

        async def shout(command: Shout) -> str:
            return command.word.upper()

        bus.attach("loud", {Shout: shout})
    assert answers == ["HI"]


async def test_the_wait_is_bounded_and_a_down_owner_fails_fast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = Bus(start_wait=30)
    bus.declare_owner(Shout, "loud")
    bus.starting("loud")
    started = trio.current_time()
    with pytest.raises(Unavailable, match=r'handler "loud" is still starting after 30s'):
        await bus.request(Shout(word="hi"))
    assert trio.current_time() - started == pytest.approx(30)
    bus.detach("loud", "crashed (boom) and restarts in 1s; retry then")
    started = trio.current_time()
    with pytest.raises(Unavailable, match=r'handler "loud" crashed \(boom\)'):
        await bus.serving("loud")
    assert trio.current_time() == started


async def test_supervisor_declares_routes_of_disabled_handlers_and_marks_ready(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    plan = Roster([Loud, Quiet]).plan(disabled=["quiet"])
    async with open_sqlite_store(tmp_path / "state.db") as store:
        bus = Bus()
        ctx = HandlerContext(
            bus=bus, store=store, config=Config(), root=tmp_path, run_root=tmp_path
        )
        supervisor = Supervisor(plan, ctx)
        assert sorted(owner for owner, _ in bus.routes()) == ["loud", "quiet"]
        with pytest.raises(Unavailable, match=r'handler "quiet" is disabled in carte\.yaml'):
            await bus.serving("quiet")
        async with trio.open_nursery() as nursery:
            ready = trio.Event()

            async def wait_ready() -> None:
                await bus.wait_ready()
                ready.set()

            nursery.start_soon(wait_ready)
            nursery.start_soon(supervisor.run)
            instance = await bus.serving("loud")  # waits through the 5 s start
            assert isinstance(instance, Loud)
            assert await bus.request(Shout(word="ok")) == "OK"
            await ready.wait()
            nursery.cancel_scope.cancel()
