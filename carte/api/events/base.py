"""The event base classes: `Event`, `Command`, `Fact`, and `event_name`.

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
    public: ClassVar[bool] = True
    """False for a command only handlers send each other (its answer holds secrets): the
    API does not serve it at ``POST /v1/commands/<Name>`` nor list it in its OpenAPI document."""


class Fact(Event, frozen=True, kw_only=True):
    """Something that happened; `id` names the object it happened to."""

    topic: ClassVar[str] = "fact"
    id: str = ""
    time: float = msgspec.field(default_factory=_now)


def event_name(event: Event | type[Event]) -> str:
    """The tag of an event or event class (its class name)."""
    cls: Any = event if isinstance(event, type) else type(event)
    return str(cls.__struct_config__.tag)
