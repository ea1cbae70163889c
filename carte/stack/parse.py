"""Read a Compose file: YAML (ruamel.yaml, keeping line numbers), interpolation, decoding into
`model.Manifest`, then `validate.check`.

Every problem raises `ManifestError` with one line naming the file, the line and the key, e.g.
``compose.yaml:7: services.web.deploy.replicas: Expected `int`, got `str```.
"""

import re
from typing import Any

import msgspec
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from carte.stack.interpolate import InterpolationError, interpolate
from carte.stack.model import Manifest, Service
from carte.stack.yaml_bounds import YamlLimitError, load_bounded

Path = tuple[str | int, ...]


class ManifestError(ValueError):
    """An invalid Compose file; the message is one line with file, line and key."""


class Source:
    """Where each key of the file was: a dotted path to its 1-based line."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name
        self.lines: dict[Path, int] = {}

    def line_of(self, path: Path) -> int:
        """The line of `path`, else of its nearest parent that has one (1 when none does)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    def error(self, path: Path, message: str) -> ManifestError:
        where = _dotted(path)
        prefix = f"{self.file_name}:{self.line_of(path)}: "
        return ManifestError(prefix + (f"{where}: {message}" if where else message))


def load_manifest(
    text: str, file_name: str, env: dict[str, str]
) -> tuple[Manifest, Source, list[str]]:
    """The decoded and validated manifest, where its keys were, and warnings (unset
    variables). `ManifestError` on any problem, also for a file over the bounds of
    `carte.stack.yaml_bounds` (alias bombs, deep nesting)."""
    from carte.stack.validate import check

    source = Source(file_name)
    try:
        document = load_bounded(text)
    except YamlLimitError as error:
        raise ManifestError(f"{file_name}:{error.line}: {error.message}") from None
    except MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise ManifestError(f"{file_name}:{line}: not valid YAML: {error.problem}") from None
    except YAMLError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "invalid syntax"
        raise ManifestError(f"{file_name}:1: not valid YAML: {first}") from None
    if not isinstance(document, CommentedMap):
        raise ManifestError(f"{file_name}:1: a Compose file is a mapping with a services key")
    missing: set[str] = set()
    plain = _plain(document, (), source, env, missing)
    manifest = _decode(plain, source)
    check(manifest, source)
    warnings = [f'variable "{name}" is not set; using ""' for name in sorted(missing)]
    return manifest, source, warnings


def _plain(node: Any, path: Path, source: Source, env: dict[str, str], missing: set[str]) -> Any:
    """`node` as plain dicts/lists with strings interpolated and `x-*` keys dropped."""
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = str(key)
            try:
                line = node.lc.key(key)[0] + 1
            except (KeyError, TypeError):  # a key merged in with <<: has no place of its own
                line = node.lc.line + 1
            if name.startswith("x-") and not (name == "x-carte" and _is_service(path)):
                continue
            source.lines[(*path, name)] = line
            out[name] = _plain(value, (*path, name), source, env, missing)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, value in enumerate(node):
            source.lines[(*path, index)] = node.lc.item(index)[0] + 1
            items.append(_plain(value, (*path, index), source, env, missing))
        return items
    if isinstance(node, str):
        try:
            return interpolate(str(node), env, missing)
        except InterpolationError as error:
            raise source.error(path, str(error)) from None
    # ruamel's round-trip scalars (ScalarFloat, ScalarInt, ScalarBoolean) as plain values
    if isinstance(node, bool) or type(node).__name__ == "ScalarBoolean":
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _decode(plain: dict[str, Any], source: Source) -> Manifest:
    """msgspec names no mapping key in its error paths (`[...]`); services are decoded one by
    one first so the error names the service, and nested keys are found in the data."""
    try:
        return msgspec.convert(plain, Manifest, strict=False)
    except msgspec.ValidationError as error:
        whole = str(error)
    services = plain.get("services")
    if isinstance(services, dict):
        for name, body in services.items():
            try:
                msgspec.convert(body, Service, strict=False)
            except msgspec.ValidationError as error:
                raise _decode_error(str(error), source, ("services", name), body) from None
    raise _decode_error(whole, source, (), plain)


def _is_service(path: Path) -> bool:
    return len(path) == 2 and path[0] == "services"


_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _decode_error(text: str, source: Source, prefix: Path, data: Any) -> ManifestError:
    match = _AT.match(text)
    message = match.group("message") if match else text
    path = (*prefix, *_resolve(_path(match.group("path")) if match else (), data))
    unknown = _UNKNOWN.match(message)
    if unknown:
        field = unknown.group("field")
        return source.error(
            (*path, field), f'unknown key "{field}"; remove it or prefix it with "x-"'
        )
    required = _MISSING.match(message)
    if required:
        return source.error(path, f'key "{required.group("field")}" is required')
    return source.error(path, message)


_ANY_KEY = "[...]"


def _path(text: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for name, index, any_key in re.findall(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])", text):
        if name:
            parts.append(name)
        elif index:
            parts.append(int(index))
        elif any_key:
            parts.append(_ANY_KEY)
    return tuple(parts)


def _resolve(path: Path, data: Any) -> Path:
    """`path` with each unnamed mapping key replaced by the first key whose value holds the
    rest of the path (the best msgspec's error lets us do)."""
    if not path:
        return ()
    head, rest = path[0], path[1:]
    if head == _ANY_KEY and isinstance(data, dict):
        for key, value in data.items():
            if _holds(value, rest):
                return (key, *_resolve(rest, value))
        return ()
    if isinstance(data, dict) and head in data:
        return (head, *_resolve(rest, data[head]))
    if isinstance(data, list) and isinstance(head, int) and head < len(data):
        return (head, *_resolve(rest, data[head]))
    return (head,)


def _holds(data: Any, path: Path) -> bool:
    if not path:
        return True
    head = path[0]
    if head == _ANY_KEY:
        return isinstance(data, dict)
    if isinstance(data, dict):
        return head in data and _holds(data[head], path[1:])
    if isinstance(data, list) and isinstance(head, int):
        return head < len(data) and _holds(data[head], path[1:])
    return False


def _dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text
