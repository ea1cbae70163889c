"""The `/v1/events` stream: journaled facts since a time, then live facts, as NDJSON.

A type filter matches an event's name (`ContainerStarted`), its topic (`container.started`) or
a topic prefix (`container` matches every `container.*` topic).
"""

from collections.abc import AsyncIterator, Sequence

import msgspec

from carte.api.errors import InvalidArgument
from carte.api.events import Fact, event_name
from carte.engine import Bus

_encoder = msgspec.json.Encoder()

# Room for bursts; a client that reads slower than this makes publishers wait (bus backpressure).
STREAM_BUFFER = 256


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which facts a client asked for: empty `types` means all; `since` is a Unix time or None."""

    types: tuple[str, ...] = ()
    since: float | None = None

    @classmethod
    def from_args(cls, types: Sequence[str], since: str | None) -> "EventQuery":
        """Parse query-string values; raises InvalidArgument naming the bad one."""
        wanted = tuple(t for value in types for t in value.split(",") if t)
        if since is None or since == "":
            return cls(types=wanted)
        try:
            return cls(types=wanted, since=float(since))
        except ValueError:
            raise InvalidArgument(
                f'query "since={since}" is not a Unix time in seconds; use e.g. since=1700000000'
            ) from None

    def matches(self, fact: Fact) -> bool:
        if not self.types:
            return True
        name, topic = event_name(fact), fact.topic
        return any(
            wanted in (name, topic) or topic.startswith(wanted + ".") for wanted in self.types
        )


async def stream_events(bus: Bus, query: EventQuery) -> AsyncIterator[bytes]:
    """Yield one JSON line per matching fact until the client goes away.

    Subscribes before reading the journal so no fact falls between the two; a fact seen in
    both is sent once. Cancellation (client gone, daemon stopping) unsubscribes.
    """
    async with bus.subscribe(Fact, buffer=STREAM_BUFFER) as facts:
        sent: set[int] = set()
        if query.since is not None:
            for fact in bus.journal.since(query.since, ()):
                if query.matches(fact):
                    sent.add(id(fact))
                    yield _encoder.encode(fact) + b"\n"
        async for fact in facts:
            if id(fact) in sent:
                sent.discard(id(fact))
                continue
            if query.matches(fact):
                yield _encoder.encode(fact) + b"\n"
