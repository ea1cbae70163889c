"""JSON for the client's requests and answers, without the `json` package.

`json.decoder`, `json.scanner` and `json.encoder` import `re` (with `enum`, `functools`,
`collections`): about 6 ms of CPU at each client start, more than half a bare interpreter's,
although the C accelerator they wrap, `_json`, needs none of it. This drives `_json` directly
for compact text and writes indented text (`inspect`, `--format json`) as `json.dumps(value,
indent=2)` does. Should a Python's `_json` differ from what is used here, the `json` package
does the work instead.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"


class _Decoding:
    """The settings `_json.make_scanner` reads, those of a default `json.JSONDecoder`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    array_hook = None  # read from Python 3.15 on
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_scan: Callable[[str, int], tuple[Any, int]] | None
_encode: Callable[[Any, int], Any] | None
try:
    _scan = _json.make_scanner(_Decoding())  # type: ignore[arg-type]
    # markers (None: no cycle check), default, encoder, indent, key and item separators,
    # sort_keys, skipkeys, allow_nan
    _encode = _json.make_encoder(
        None, _unencodable, _json.encode_basestring_ascii, None, ":", ",", False, False, True
    )
except (AttributeError, TypeError):  # pragma: no cover - another Python's _json
    _scan = _encode = None


def dumps(value: Any) -> str:
    """`value` as compact JSON text (ASCII, no spaces); TypeError for what JSON cannot hold."""
    if _encode is None:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"))
    return "".join(_encode(value, 0))


def quoted(text: str) -> str:
    """`text` as a JSON string, other than ASCII kept: `json.dumps(text, ensure_ascii=False)`."""
    return _json.encode_basestring(text)


def indented(value: Any, indent: str = "  ", depth: int = 0) -> str:
    """`value` as `json.dumps(value, indent=2)` writes it; TypeError for what JSON cannot hold."""
    if isinstance(value, dict) and value:
        inner = "\n" + indent * (depth + 1)
        items = [f"{_key(key)}: {indented(item, indent, depth + 1)}" for key, item in value.items()]
        return "{" + inner + ("," + inner).join(items) + "\n" + indent * depth + "}"
    if isinstance(value, list | tuple) and value:
        inner = "\n" + indent * (depth + 1)
        items = [indented(item, indent, depth + 1) for item in value]
        return "[" + inner + ("," + inner).join(items) + "\n" + indent * depth + "]"
    return dumps(value)


def _key(key: Any) -> str:
    """A dict key as JSON writes it: always a string."""
    if isinstance(key, str):
        return dumps(key)
    if key is None or isinstance(key, bool | int | float):
        return dumps(dumps(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def loads(data: bytes | str) -> Any:
    """The value of JSON `data` (UTF-8 when bytes); ValueError when it is not one JSON value."""
    text = data.decode("utf-8", "surrogatepass") if isinstance(data, bytes) else data
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError(f"no JSON value at character {start}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value
