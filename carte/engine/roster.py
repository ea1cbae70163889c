"""The handler roster: every handler, built-in or plugin, ordered by what it requires.

Reading `Roster.plan` tells what the daemon will run: the enabled handlers, dependencies
first, after rejecting duplicates, cycles, missing or disabled requirements and commands
owned twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from carte.api.errors import InvalidArgument
from carte.api.events import Command, event_name
from carte.engine.handler import Handler


class RosterError(InvalidArgument):
    """The set of handlers cannot run together; the message names the handlers and the fix."""


@dataclass(frozen=True)
class Plan:
    """What will run: ``handlers`` in start order; ``disabled`` by carte.yaml."""

    handlers: tuple[type[Handler], ...]
    disabled: tuple[str, ...]
    unknown_disabled: tuple[str, ...]
    """Names in ``handlers.disabled`` that no installed handler has (worth a warning)."""
    disabled_handlers: tuple[type[Handler], ...] = ()
    """The installed handlers behind ``disabled`` (their routes answer 503 naming them)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(handler.name for handler in self.handlers)


def _origin(handler: type[Handler]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


class Roster:
    """Collects handler classes by name, in registration order."""

    def __init__(self, handlers: Iterable[type[Handler]] = ()) -> None:
        self._handlers: dict[str, type[Handler]] = {}
        for handler in handlers:
            self.add(handler)

    def add(self, handler: type[Handler]) -> None:
        """Register ``handler``. Raises RosterError for a missing or duplicate name."""
        if not (isinstance(handler, type) and issubclass(handler, Handler)):
            raise RosterError(f"{handler!r} is not a Handler subclass; plugins must subclass it")
        name = getattr(handler, "name", "")
        if not isinstance(name, str) or not name:
            raise RosterError(
                f'handler {_origin(handler)} has no name; set the class attribute name = "..."'
            )
        existing = self._handlers.get(name)
        if existing is not None and existing is not handler:
            raise RosterError(
                f'two handlers are named "{name}": {_origin(existing)} and {_origin(handler)}; '
                "rename one or uninstall the plugin that brings the other"
            )
        self._handlers[name] = handler

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def get(self, name: str) -> type[Handler] | None:
        return self._handlers.get(name)

    def plan(
        self, *, enabled: Collection[str] | None = None, disabled: Collection[str] = ()
    ) -> Plan:
        """Order the enabled handlers so each starts after everything it requires.

        ``enabled`` None means every registered handler; otherwise only those names.
        ``disabled`` names are removed afterwards. Raises RosterError for an unknown name in
        ``enabled``, a requirement that is missing or disabled, a cycle (naming it), or a
        command owned by two enabled handlers (naming both).
        """
        if enabled is not None:
            unknown = [name for name in enabled if name not in self._handlers]
            if unknown:
                raise RosterError(
                    f'handlers.enabled names unknown handler "{unknown[0]}"; installed: '
                    f"{', '.join(self._handlers) or 'none'}"
                )
        chosen = [
            name
            for name in self._handlers
            if (enabled is None or name in enabled) and name not in disabled
        ]
        off = tuple(name for name in self._handlers if name not in chosen)
        for name in chosen:
            for required in self._handlers[name].requires:
                if required not in self._handlers:
                    raise RosterError(
                        f'handler "{name}" requires "{required}", which is not installed; '
                        f'install the plugin that provides it or disable "{name}" in carte.yaml'
                    )
                if required not in chosen:
                    raise RosterError(
                        f'handler "{name}" requires "{required}", which is disabled in '
                        f'carte.yaml; enable "{required}" or disable "{name}" too'
                    )
        ordered = self._order(chosen)
        self._check_command_owners(ordered)
        return Plan(
            handlers=tuple(self._handlers[name] for name in ordered),
            disabled=off,
            unknown_disabled=tuple(name for name in disabled if name not in self._handlers),
            disabled_handlers=tuple(self._handlers[name] for name in off),
        )

    def _order(self, chosen: list[str]) -> list[str]:
        ordered: list[str] = []
        done: set[str] = set()
        path: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            if name in path:
                cycle = [*path[path.index(name) :], name]
                raise RosterError(
                    f"handlers require each other in a cycle: {' -> '.join(cycle)}; "
                    "remove one of these requirements"
                )
            path.append(name)
            for required in self._handlers[name].requires:
                visit(required)
            path.pop()
            done.add(name)
            ordered.append(name)

        for name in chosen:
            visit(name)
        return ordered

    def _check_command_owners(self, ordered: list[str]) -> None:
        owners: dict[type[Command[Any]], str] = {}
        for name in ordered:
            for command_type in self._handlers[name].commands:
                other = owners.setdefault(command_type, name)
                if other != name:
                    raise RosterError(
                        f'command "{event_name(command_type)}" is owned by both handler '
                        f'"{other}" and handler "{name}"; disable one of them in carte.yaml '
                        "(handlers.disabled)"
                    )
