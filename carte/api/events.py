"""Every built-in event type, in one module.

Events are frozen, tagged msgspec Structs (the tag is the class name). Two kinds:

* `Command` — imperative, exactly one handler owns it; ``await bus.request(cmd)`` returns the
  command's ``Result`` type or raises a `carte.api.errors.CarteError`.
* `Fact` — past tense, published after the state change is committed; any number of
  subscribers. Every fact carries its topic (class var), a timestamp and the object's id.

Plugins may declare their own subclasses of `Command` and `Fact` in their own modules.
"""

import time
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

ResultT = TypeVar("ResultT")


def _now() -> float:
    return time.time()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of all events; the tag is the class name."""

    topic: ClassVar[str] = "event"


class Command(Event, Generic[ResultT], frozen=True, kw_only=True):
    """An imperative request with one owning handler and a typed result."""

    topic: ClassVar[str] = "command"


class Fact(Event, frozen=True, kw_only=True):
    """Something that happened; `id` names the object it happened to."""

    topic: ClassVar[str] = "fact"
    id: str = ""
    time: float = msgspec.field(default_factory=_now)


# --- engine facts -------------------------------------------------------------------------


class DaemonStarted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.started"
    pid: int
    version: str


class DaemonStopping(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.stopping"
    reason: str


class ConfigReloaded(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.config_reloaded"
    applied: list[str] = []
    not_reloadable: list[str] = []


class HandlerStarted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.started"


class HandlerSkipped(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.skipped"
    reason: str


class HandlerDisabled(Fact, frozen=True, kw_only=True):
    """A handler is installed but not run: carte.yaml disables it (published by the daemon)."""

    topic: ClassVar[str] = "handler.disabled"
    reason: str


class HandlerCrashed(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.crashed"
    error: str
    restart_in: float


# --- engine commands ----------------------------------------------------------------------


class Ping(Command[str], frozen=True, kw_only=True):
    """Round trip through the bus; the engine answers "pong"."""

    topic: ClassVar[str] = "engine.ping"


def event_name(event: Event | type[Event]) -> str:
    """The tag of an event or event class (its class name)."""
    cls: Any = event if isinstance(event, type) else type(event)
    return str(cls.__struct_config__.tag)
