"""docs/plugins.md is generated from the Structs; this fails when it is out of date."""

from pathlib import Path

from carte.plugins import api
from carte.plugins.docs import render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def test_docs_plugins_md_is_up_to_date() -> None:
    assert DOCS.read_text() == render(), (
        "docs/plugins.md is stale; regenerate it: python -m carte.plugins.docs > docs/plugins.md"
    )


def test_every_fact_and_command_a_plugin_may_use_is_documented_with_its_topic() -> None:
    text = DOCS.read_text()
    for event in (*api.FACTS, *api.COMMANDS):
        assert f"### {event.__name__} — `{event.topic}`" in text
    assert "| `exit_code` | `int` | required |" in text  # ContainerExited's fields
