"""docs/plugins.md is generated from the Structs; this fails when it is out of date."""

from support import REPO

from carte.plugins import api
from carte.plugins.docs import render

DOCS = REPO / "docs" / "plugins.md"


def test_docs_plugins_md_is_up_to_date() -> None:
    assert DOCS.read_text() == render(), (
        "docs/plugins.md is stale; regenerate it: python -m carte.plugins.docs > docs/plugins.md"
    )


def test_every_fact_and_command_a_plugin_may_use_is_documented_with_its_topic() -> None:
    text = DOCS.read_text()
    for event in (*api.FACTS, *api.COMMANDS):
        assert f"### {event.__name__} — `{event.topic}`" in text
    assert "| `exit_code` | `int` | required |" in text  # ContainerExited's fields


# Commands the daemon's handlers send each other; plugins must not (they would bypass the owner).
INTERNAL = {
    "AttachContainerNetwork",
    "DetachContainerNetwork",
    "DrainReplica",
    "GetServiceAddress",
    "SetContainerEndpoint",
    "SetContainerHealth",
    "SetContainerRestarting",
    "SetServiceAddress",
}


def test_every_public_fact_and_command_is_exported_to_plugins() -> None:
    """A new event in carte.api.events must be added to carte.plugins.api (and the docs)."""
    import carte.api.events as events

    public = {getattr(events, name) for name in events.__all__}
    facts = {e for e in public if isinstance(e, type) and issubclass(e, api.Fact)} - {api.Fact}
    commands = {e for e in public if isinstance(e, type) and issubclass(e, api.Command)}
    commands -= {api.Command}
    assert facts == set(api.FACTS)
    assert {c.__name__ for c in commands - set(api.COMMANDS)} == INTERNAL
