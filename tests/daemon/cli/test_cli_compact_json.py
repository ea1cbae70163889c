"""The client's JSON without the `json` package (carte.cli.compact_json) reads and writes
what `json` does: the same text for requests and for what `inspect` prints, the same values
from answers, and ValueError (what the client's error handling catches) for an answer that is
not JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carte.cli import compact_json

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_same_text_and_values_as_json(value: Any) -> None:
    assert compact_json.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert compact_json.indented(value) == json.dumps(value, indent=2)
    assert compact_json.loads(json.dumps(value, indent=2).encode()) == value
    assert compact_json.loads(" \n" + json.dumps(value) + "\r\n") == value


@pytest.mark.parametrize(
    "answer", [b"", b"  ", b"{", b'{"a": 1} trailing', b"<html>bad gateway</html>", b'"\xff"']
)
def test_what_is_not_one_json_value_is_a_value_error(answer: bytes) -> None:
    with pytest.raises(ValueError):
        compact_json.loads(answer)


def test_what_json_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        compact_json.dumps({"body": object()})
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        compact_json.indented({"body": [object()]})
    with pytest.raises(TypeError, match="keys must be"):
        compact_json.indented({("a", "b"): 1})


def test_keys_that_are_not_strings_are_written_as_json_writes_them() -> None:
    value = {7: "a", 2.5: "b", True: "c", None: "d"}
    assert compact_json.indented(value) == json.dumps(value, indent=2)
