"""A test kit for plugin authors: run a plugin in-process, in milliseconds, as the daemon would.

`run_plugin` starts the plugin under the daemon's own supervisor, on a real bus and a real
(in-memory SQLite) store, with its ``Options`` decoded from a mapping the way carte.yaml's
``handlers.options.<name>`` is::

    from carte.plugins.api import ContainerExited
    from carte.plugins.testing import run_plugin

    async def test_counts_failures() -> None:            # pytest with trio_mode
        async with run_plugin(ExitCounter, options={"only_failures": True}) as plugin:
            await plugin.publish(ContainerExited(id="c1", name="web", exit_code=2))
            assert plugin.handler.failures == 1

`PluginRun.publish` returns once the plugin handled the fact; `respond` answers a command the
plugin sends (``InspectContainer``...) in place of the daemon's handler that owns it; the
handlers a plugin ``requires`` are stood in for by empty ones. `plugin_context` gives a bare
`HandlerContext` for calling a handler's methods directly. Nothing here touches the host:
the plugin's ``root`` is a fresh temporary directory, removed afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
import trio

from carte.api.events import Command, Fact
from carte.engine import Bus, Config, Handler, HandlerContext, Roster, Store, Supervisor
from carte.engine.config import HandlersConfig, handler_options
from carte.engine.store import open_sqlite_store
from carte.engine.supervisor import HandlerState, HandlerStatus

HandlerT = TypeVar("HandlerT", bound=Handler)
ResultT = TypeVar("ResultT")


@dataclass(eq=False)
class PluginRun(Generic[HandlerT]):
    """A plugin running under a supervisor; see the module docstring."""

    bus: Bus
    store: Store
    supervisor: Supervisor
    name: str
    _instances: list[HandlerT] = field(repr=False)

    @property
    def handler(self) -> HandlerT:
        """The plugin's latest instance (a crash makes the supervisor build a new one)."""
        assert self._instances, f"handler {self.name!r} was never constructed"
        return self._instances[-1]

    @property
    def status(self) -> HandlerStatus:
        """The plugin's state as `carte info` shows it (running, skipped with a reason...)."""
        status = self.supervisor.status(self.name)
        assert status is not None
        return status

    async def publish(self, fact: Fact) -> None:
        """Publish ``fact`` and return once the running plugin handled it (at once when the
        plugin is not running or does not subscribe to it). A fact method that hangs makes
        this wait: wrap it in ``trio.fail_after`` to bound it."""
        await self.supervisor.announce(fact)

    async def request(self, command: Command[ResultT]) -> ResultT:
        """Send ``command`` on the bus, as a client or another handler would."""
        return await self.bus.request(command)

    def respond(
        self, command_type: type[Command[ResultT]], answer: Callable[[Any], Awaitable[ResultT]]
    ) -> None:
        """Answer ``command_type`` with ``answer(command)`` (an async function) from now on."""
        self.bus.attach("test", {command_type: answer})

    def facts(self, *types: type[Fact]) -> list[Fact]:
        """The facts published so far (of ``types``, or all), oldest first."""
        return self.bus.journal.since(0.0, types)


@asynccontextmanager
async def run_plugin(
    handler: type[HandlerT],
    *,
    options: Mapping[str, Any] | msgspec.Struct | None = None,
    root: Path | None = None,
) -> AsyncIterator[PluginRun[HandlerT]]:
    """Run ``handler`` until the block exits (then it is cancelled, as at a daemon stop).

    ``options``: its ``handlers.options.<name>`` mapping (or its Options struct). Bad options
    raise ConfigError naming the key, as the daemon does at start. A plugin whose ``check()``
    skips it still yields (see ``status``), with ``handler`` the checked instance.
    """
    raw = msgspec.to_builtins(options) if isinstance(options, msgspec.Struct) else options
    config = Config(handlers=HandlersConfig(options={handler.name: dict(raw or {})}))
    stand_ins = [_stand_in(name) for name in handler.requires]
    recording, instances = _recording(handler)
    roster = Roster([*stand_ins, recording])
    handler_options(config, handler.options_spec())  # bad options: ConfigError, nothing runs
    with tempfile.TemporaryDirectory(prefix="carte-plugin-") as scratch:
        base = root or Path(scratch)
        async with open_sqlite_store(":memory:") as store:
            bus = Bus()
            ctx = HandlerContext(
                bus=bus, store=store, config=config, root=base, run_root=base / "run"
            )
            supervisor = Supervisor(roster.plan(), ctx)
            run = PluginRun(bus, store, supervisor, handler.name, instances)
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                yield run
                nursery.cancel_scope.cancel()


def plugin_context(
    handler: type[Handler] | None = None,
    *,
    bus: Bus | None = None,
    store: Store,
    options: Mapping[str, Any] | None = None,
    root: Path,
) -> HandlerContext:
    """A `HandlerContext` for constructing a handler by hand (``Handler(ctx)``): its options
    decoded from ``options``, ``run_root`` under ``root``. Raises ConfigError for bad options."""
    name = handler.name if handler is not None else "plugin"
    config = Config(handlers=HandlersConfig(options={name: dict(options or {})}))
    ctx = HandlerContext(
        bus=bus or Bus(), store=store, config=config, root=root, run_root=root / "run"
    )
    return ctx.for_handler(handler) if handler is not None else ctx


def _stand_in(name: str) -> type[Handler]:
    """An empty handler named ``name``, for a requirement of the plugin under test."""
    return type(f"StandIn_{name}", (Handler,), {"name": name, "__doc__": "stand-in"})


def _recording(handler: type[HandlerT]) -> tuple[type[HandlerT], list[HandlerT]]:
    """A subclass of ``handler`` that keeps every instance the supervisor builds."""
    instances: list[HandlerT] = []

    def remember(self: HandlerT, ctx: HandlerContext) -> None:
        handler.__init__(self, ctx)
        instances.append(self)

    namespace = {"__init__": remember, "__doc__": handler.__doc__, "__module__": handler.__module__}
    return type(handler.__name__, (handler,), namespace), instances


__all__ = ["HandlerState", "PluginRun", "plugin_context", "run_plugin"]
