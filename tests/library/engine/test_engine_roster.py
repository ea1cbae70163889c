"""The registry: order by requirements; reject duplicates, cycles, missing and double owners."""

from typing import ClassVar

import pytest

from carte.api.events import Command
from carte.engine import Handler, Roster, RosterError, on


class Reload(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "test.reload"


def handler(name: str, *requires: str) -> type[Handler]:
    return type(name.title(), (Handler,), {"name": name, "requires": requires})


def test_handlers_start_after_what_they_require() -> None:
    registry = Roster([handler("api", "store"), handler("web", "api"), handler("store")])
    assert registry.plan().names == ("store", "api", "web")


def test_duplicate_names_are_rejected_naming_both_classes() -> None:
    registry = Roster([handler("api")])
    with pytest.raises(RosterError, match=r'two handlers are named "api": .*Api and .*Api'):
        registry.add(handler("api"))


def test_a_handler_without_a_name_is_rejected() -> None:
    class Nameless(Handler):
        pass

    with pytest.raises(RosterError, match="has no name"):
        Roster([Nameless])


def test_a_cycle_is_rejected_naming_the_cycle() -> None:
    registry = Roster([handler("a", "b"), handler("b", "c"), handler("c", "a"), handler("d")])
    with pytest.raises(RosterError, match=r"cycle: a -> b -> c -> a"):
        registry.plan()


def test_a_missing_requirement_is_named() -> None:
    registry = Roster([handler("api", "auth")])
    with pytest.raises(RosterError, match=r'"api" requires "auth", which is not installed'):
        registry.plan()


def test_disabled_handlers_are_left_out_and_reported() -> None:
    registry = Roster([handler("api"), handler("webhook"), handler("dns")])
    plan = registry.plan(disabled=["webhook", "nosuch"])
    assert plan.names == ("api", "dns")
    assert plan.disabled == ("webhook",)
    assert plan.unknown_disabled == ("nosuch",)


def test_enabled_runs_only_the_listed_handlers() -> None:
    registry = Roster([handler("api"), handler("webhook"), handler("dns")])
    assert registry.plan(enabled=["dns", "api"]).names == ("api", "dns")
    with pytest.raises(RosterError, match='unknown handler "dsn"'):
        registry.plan(enabled=["dsn"])


def test_disabling_a_requirement_is_an_error_with_the_fix() -> None:
    registry = Roster([handler("api"), handler("web", "api")])
    with pytest.raises(RosterError, match=r'"web" requires "api", which is disabled'):
        registry.plan(disabled=["api"])


def test_two_handlers_owning_one_command_are_named_unless_one_is_disabled() -> None:
    class First(Handler):
        name = "first"

        @on(Reload)
        async def reload(self, command: Reload) -> None:
            return None

    class Second(Handler):
        name = "second"

        @on(Reload)
        async def reload(self, command: Reload) -> None:
            return None

    registry = Roster([First, Second])
    with pytest.raises(RosterError, match=r'"Reload" is owned by both handler "first" and'):
        registry.plan()
    assert registry.plan(disabled=["second"]).names == ("first",)


def test_one_handler_answering_a_command_twice_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match="answers command Reload twice"):

        class Twice(Handler):
            name = "twice"

            @on(Reload)
            async def one(self, command: Reload) -> None:
                return None

            @on(Reload)
            async def two(self, command: Reload) -> None:
                return None
