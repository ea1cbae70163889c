"""Handlers: the units of work on the bus, and the `on` decorator that wires their methods.

A handler is a class with a unique ``name``, the names it ``requires``, and methods marked
``@on(EventType)``:

* ``@on(SomeCommand)`` — this handler owns the command; ``bus.request(cmd)`` calls the method
  in the requesting task and returns its result (or raises its `CarteError`).
* ``@on(SomeFact)`` — called for every published fact of that type (or a subclass), in
  publication order, from the handler's own bounded channel.

``check()`` may return a reason to skip the handler (a missing kernel feature); ``run()`` is an
optional long-lived task started with ``nursery.start`` (call ``task_status.started()`` once
ready). The supervisor builds a fresh instance for every (re)start.

``Options`` is the handler's typed options (a `HandlerOptions` struct): the daemon decodes
``handlers.options.<name>`` (or the top-level ``section`` a built-in claims) from carte.yaml
into it with file:line errors, and the handler reads ``self.ctx.options``.

On its first start a handler also receives the facts of its types that were published since
the daemon started and before it subscribed (from the journal), in order, before any newer
one; a handler that rebuilds that state itself at start sets ``catch_up = False``.

``routes`` declares the HTTP routes a handler serves beyond the generic command route (streams,
uploads, downloads, WebSockets) as plain `Route` values: the engine knows no web framework; the
http handler turns them into routes and runs each request on the owning handler's running
instance, or answers 503 naming the handler while it is disabled, skipped or down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import msgspec
import trio

from carte.api.events import Command, Event, Fact, event_name
from carte.engine.config import NoOptions, OptionsSpec, handler_options

if TYPE_CHECKING:
    from carte.engine.bus import Bus
    from carte.engine.config import Config
    from carte.engine.store import Store

MethodT = TypeVar("MethodT", bound=Callable[..., Any])

_ON_ATTR = "_carte_on"


def on(event_type: type[Event]) -> Callable[[MethodT], MethodT]:
    """Mark a handler method as the owner of a Command or a subscriber to a Fact type.

    Stack several ``@on`` to subscribe one method to several fact types. Raises TypeError at
    class-definition time for anything that is not a Command or Fact class.
    """
    if not (isinstance(event_type, type) and issubclass(event_type, (Command, Fact))):
        raise TypeError(f"@on expects a Command or Fact class, got {event_type!r}")

    def mark(method: MethodT) -> MethodT:
        marked: tuple[type[Event], ...] = getattr(method, _ON_ATTR, ())
        setattr(method, _ON_ATTR, (*marked, event_type))
        return method

    return mark


RouteMethod = Literal["GET", "POST", "PUT", "DELETE", "WEBSOCKET"]


@dataclass(frozen=True)
class Route:
    """An HTTP route a handler serves, declared without any web framework.

    ``serve(handler, **path_params)`` answers a request with the owning handler's running
    instance (placeholders such as ``<ref>`` in ``path`` become keyword arguments) and returns
    what the http handler's framework sends. ``upload``: the body is a file the route streams
    to disk (the upload size cap applies, not the small command-body cap). ``streams``: the
    answer lasts as long as the work or the client (follow streams, progress, downloads), so
    no server-side response timeout ends it.
    """

    method: RouteMethod
    path: str
    serve: Callable[..., Awaitable[Any]]
    upload: bool = False
    streams: bool = False


@dataclass
class HandlerContext:
    """What a handler may use. One per handler; the supervisor swaps ``config`` on reload."""

    bus: Bus
    store: Store
    config: Config
    root: Path
    run_root: Path
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("carte.handler"))
    options: Any = field(default_factory=NoOptions)
    """This handler's ``Options`` struct, decoded from carte.yaml."""

    def for_handler(self, handler: type[Handler]) -> HandlerContext:
        """A copy for ``handler``: its own logger and its own options.

        Raises ConfigError naming the handler when its options do not fit its ``Options``.
        """
        return replace(
            self,
            log=logging.getLogger(f"carte.handler.{handler.name}"),
            options=handler_options(self.config, handler.options_spec()),
        )


class Handler:
    """Base class of every handler, built-in or plugin. See the module docstring."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    commands: ClassVar[Mapping[type[Command[Any]], str]] = {}
    """Command type -> name of the method that answers it (collected from ``@on``)."""
    facts: ClassVar[Mapping[type[Fact], tuple[str, ...]]] = {}
    """Fact type -> names of the methods called for it (collected from ``@on``)."""
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    """Typed options (subclass `HandlerOptions`); ``ctx.options`` is an instance."""
    section: ClassVar[str] = ""
    """A top-level carte.yaml section holding the options too (built-ins: ``network``...)."""
    catch_up: ClassVar[bool] = True
    """Receive, on the first start, the facts published since the daemon started."""
    routes: ClassVar[tuple[Route, ...]] = ()
    """HTTP routes this handler serves (see `Route`); served only while it runs."""

    @classmethod
    def options_spec(cls) -> OptionsSpec:
        """Where carte.yaml holds this handler's options and what they must be."""
        return OptionsSpec(name=cls.name, options=cls.Options, section=cls.section)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        commands: dict[type[Command[Any]], str] = {}
        facts: dict[type[Fact], tuple[str, ...]] = {}
        methods: dict[str, tuple[type[Event], ...]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                methods.pop(attr, None)  # an override without @on unsubscribes
                marked: tuple[type[Event], ...] = getattr(value, _ON_ATTR, ())
                if marked:
                    methods[attr] = marked
        for attr, marked in methods.items():
            for event_type in marked:
                if issubclass(event_type, Command):
                    if event_type in commands:
                        raise TypeError(
                            f"{cls.__qualname__} answers command {event_name(event_type)} twice: "
                            f"in {commands[event_type]}() and {attr}(); keep one"
                        )
                    commands[event_type] = attr
                elif issubclass(event_type, Fact):
                    facts[event_type] = (*facts.get(event_type, ()), attr)
        cls.commands = commands
        cls.facts = facts

    def __init__(self, ctx: HandlerContext) -> None:
        if not isinstance(ctx.options, self.Options):  # a context not made by for_handler
            ctx = ctx.for_handler(type(self))
        self.ctx = ctx

    async def check(self) -> str | None:
        """Return a reason to skip this handler (e.g. a missing kernel feature), or None."""
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Optional long-lived work; call ``task_status.started()`` once ready to serve.

        Cancelled when the daemon stops. An exception here counts as a crash: the supervisor
        logs it and restarts the handler with backoff.
        """
        task_status.started()
