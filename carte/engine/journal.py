"""The event journal: a ring buffer of the most recent facts, for ``carte events --since``."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from carte.api.events import Fact, event_name


class Journal:
    """Keeps the last ``size`` published facts in publication order. Not thread-safe."""

    def __init__(self, size: int) -> None:
        self._facts: deque[Fact] = deque(maxlen=max(size, 0))
        self._appended = 0

    @property
    def size(self) -> int:
        return self._facts.maxlen or 0

    def __len__(self) -> int:
        return len(self._facts)

    def append(self, fact: Fact) -> None:
        self._facts.append(fact)
        self._appended += 1

    def mark(self) -> int:
        """A position: `after(mark)` gives the facts appended since this call."""
        return self._appended

    def after(self, mark: int, types: tuple[type[Fact], ...] = (Fact,)) -> list[Fact]:
        """Facts appended since `mark` that are still kept (the oldest may have been evicted),
        oldest first, of the given types (subclasses match too)."""
        newer = min(self._appended - mark, len(self._facts))
        if newer <= 0:
            return []
        kept = list(self._facts)[len(self._facts) - newer :]
        return [fact for fact in kept if isinstance(fact, types)]

    def resize(self, size: int) -> None:
        """Change the capacity (reloadable); shrinking keeps the newest facts."""
        self._facts = deque(self._facts, maxlen=max(size, 0))

    def since(self, time: float = 0.0, types: Iterable[type[Fact] | str] = ()) -> list[Fact]:
        """Facts with ``fact.time >= time``, oldest first, filtered by type when ``types`` is given.

        A type is a Fact class (subclasses match too) or a name: the class name
        (``ContainerStarted``) or the topic (``container.started``).
        """
        classes = tuple(t for t in types if isinstance(t, type))
        names = {t for t in types if isinstance(t, str)}
        wanted = bool(classes or names)
        return [
            fact
            for fact in self._facts
            if fact.time >= time
            and (
                not wanted
                or isinstance(fact, classes)
                or event_name(fact) in names
                or fact.topic in names
            )
        ]
