"""Read a Compose file: YAML (ruamel.yaml, keeping line numbers), interpolation, decoding into
`model.Manifest`, then `validate.check`.

Every problem raises `ManifestError` with one line naming the file, the line and the key, e.g.
``compose.yaml:7: services.web.deploy.replicas: Expected `int`, got `str```.
"""

import difflib
import os
import re
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import msgspec
import msgspec.inspect as mi
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from carte.stack.compose_files import RESET, Override, active_services, merge, rebase, strip
from carte.stack.interpolate import InterpolationError, interpolate
from carte.stack.model import (
    REFUSED_SERVICE_KEYS,
    FileDecl,
    Manifest,
    NetworkDecl,
    Service,
    VolumeDecl,
)
from carte.yaml_bounds import YamlLimitError, load_bounded

if TYPE_CHECKING:
    from carte.stack.validate import Ceilings

Path = tuple[str | int, ...]

MAX_ERRORS = 20
"""Problems reported in one run; the rest are counted."""


class ManifestError(ValueError):
    """An invalid Compose file: one line per problem, each with file, line and key."""


class Source:
    """Where each key of the project was: a dotted path to its 1-based line (and its file,
    for keys that came from an included or extended file); the problems found so far."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name
        self.lines: dict[Path, int] = {}
        self.files: dict[Path, str] = {}
        self.problems: list[str] = []
        self._more = [0]  # shared with the Sources of other files of the project

    def _nearest(self, path: Path) -> Path:
        while path:
            if path in self.lines:
                return path
            path = path[:-1]
        return ()

    def line_of(self, path: Path) -> int:
        """The line of `path`, else of its nearest parent that has one (1 when none does)."""
        return self.lines.get(self._nearest(path), 1)

    def file_of(self, path: Path) -> str:
        return self.files.get(self._nearest(path), self.file_name)

    def error(self, path: Path, message: str) -> ManifestError:
        where = _dotted(path)
        prefix = f"{self.file_of(path)}:{self.line_of(path)}: "
        return ManifestError(prefix + (f"{where}: {message}" if where else message))

    def report(self, path: Path, message: str) -> None:
        """Note a problem and go on (the caller stops at `raise_problems`)."""
        text = str(self.error(path, message))
        if text in self.problems:
            return
        if len(self.problems) < MAX_ERRORS:
            self.problems.append(text)
        else:
            self._more[0] += 1

    def raise_problems(self) -> None:
        if not self.problems:
            return
        main = f"{self.file_name}:"

        def place(problem: str) -> tuple[bool, str, int]:
            file, _, rest = problem.partition(":")
            line = rest.partition(":")[0]
            return (not problem.startswith(main), file, int(line) if line.isdigit() else 0)

        text = "\n".join(sorted(self.problems, key=place))
        if self._more[0]:
            text += f"\n... and {self._more[0]} more problems"
        raise ManifestError(text)

    def adopt(self, other: "Source", old: Path, new: Path) -> None:
        """Take `other`'s places under `old` as places under `new` (keys defined here win)."""
        for path, line in list(other.lines.items()):
            if path[: len(old)] == old:
                moved = (*new, *path[len(old) :])
                if moved not in self.lines:
                    self.lines[moved] = line
                    self.files[moved] = other.file_of(path)


class LoadOptions(TypedDict, total=False):
    """`load_project`'s keyword options, passed on as they are by `load_manifest`."""

    project_dir: str
    profiles: list[str] | None
    ceilings: "Ceilings | None"


def load_manifest(
    text: str, file_name: str, env: dict[str, str], **options: Unpack[LoadOptions]
) -> tuple[Manifest, Source, list[str]]:
    """The decoded and validated manifest, where its keys were, and warnings (unset
    variables). `include` and `extends: {file: ...}` read files relative to `project_dir`
    (the current directory when empty). Services whose `profiles` are not among `profiles`
    (or `COMPOSE_PROFILES` of `env`) are left out. `ManifestError` lists every problem found
    (up to `MAX_ERRORS`), also for a file over the bounds of `carte.yaml_bounds` or counts
    over `ceilings` (`validate.Ceilings`)."""
    manifest, source, warnings, _plain_project = load_project(text, file_name, env, **options)
    return manifest, source, warnings


def load_project(
    text: str,
    file_name: str,
    env: dict[str, str],
    *,
    project_dir: str = "",
    profiles: list[str] | None = None,
    ceilings: "Ceilings | None" = None,
) -> tuple[Manifest, Source, list[str], dict[str, Any]]:
    """`load_manifest`'s result and the project as plain data (`include` and `extends`
    merged, variables interpolated, tags applied), for `carte compose config`."""
    from carte.stack.validate import check

    source = Source(file_name)
    missing: set[str] = set()
    loader = _Loader(env, missing, project_dir or os.getcwd())
    plain = loader.document(text, file_name, source)
    loader.include(plain, source, [loader.absolute(file_name)])
    services = plain.get("services")
    if isinstance(services, dict):
        loader.extend(services, source, file_name, [])
    plain = strip(plain)
    services = plain.get("services")
    if isinstance(services, dict):
        for body in services.values():
            if isinstance(body, dict):
                _pass_through_environment(body, env)
    known = _known_keys(plain, _MANIFEST, (), source)
    manifest = _decode(known, source)
    if manifest is None:
        source.raise_problems()
    assert manifest is not None
    wanted = list(profiles or [])
    wanted += [p for p in env.get("COMPOSE_PROFILES", "").split(",") if p]
    enabled = active_services(manifest.services, wanted)
    if not enabled:
        source.report(
            ("services",),
            f"no service is enabled; pass a profile (--profile {_first_profile(manifest)})",
        )
    manifest = msgspec.structs.replace(manifest, services=enabled)
    check(manifest, source, ceilings)
    source.raise_problems()
    warnings = [f'variable "{name}" is not set; using ""' for name in sorted(missing)]
    return manifest, source, warnings, known


def _first_profile(manifest: Manifest) -> str:
    for service in manifest.services.values():
        if service.profiles:
            return service.profiles[0]
    return "NAME"


def _pass_through_environment(body: dict[str, Any], env: dict[str, str]) -> None:
    """A bare `- NAME` (or `NAME:` with no value) takes the client's value, else is unset."""
    value = body.get("environment")
    if isinstance(value, list):
        items = []
        for item in value:
            text = str(item)
            if "=" not in text:
                if text in env:
                    items.append(f"{text}={env[text]}")
                continue
            items.append(item)
        body["environment"] = items
    elif isinstance(value, dict):
        body["environment"] = {
            k: (env.get(k) if v is None else v)
            for k, v in value.items()
            if v is not None or k in env
        }


class _Loader:
    """Reads the documents of one project: the main file, included and extended files."""

    def __init__(self, env: dict[str, str], missing: set[str], project_dir: str) -> None:
        self.env = env
        self.missing = missing
        self.project_dir = project_dir
        self.files: dict[str, tuple[dict[str, Any], Source]] = {}

    def absolute(self, name: str) -> str:
        return os.path.normpath(os.path.join(self.project_dir, name))

    def document(self, text: str, file_name: str, source: Source) -> dict[str, Any]:
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
        plain = _plain(document, (), source, self.env, self.missing)
        return plain if isinstance(plain, dict) else {}

    def read(self, name: str, source: Source, at: Path) -> tuple[dict[str, Any], Source] | None:
        """Another file of the project, loaded once; None (reported at `at`) when unreadable."""
        path = self.absolute(name)
        if path in self.files:
            return self.files[path]
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as error:
            reason = "is missing" if isinstance(error, FileNotFoundError) else error.strerror
            source.report(at, f'file "{name}" {reason} ({path}); check the path')
            return None
        other = Source(os.path.relpath(path, self.project_dir))
        other.problems, other._more = source.problems, source._more
        try:
            loaded = (self.document(text, other.file_name, other), other)
        except ManifestError as error:
            source.problems.append(str(error))
            return None
        rebase(loaded[0], os.path.dirname(path))  # its paths are relative to its own directory
        self.files[path] = loaded
        return loaded

    def include(self, plain: dict[str, Any], source: Source, chain: list[str]) -> None:
        """Merge the resources of `include`d files into `plain` (a name defined twice is a
        problem) and drop the key."""
        entries = plain.pop("include", None)
        if entries is None:
            return
        if not isinstance(entries, list):
            source.report(("include",), "must be a list of files")
            return
        for index, entry in enumerate(entries):
            at: Path = ("include", index)
            paths = entry.get("path") if isinstance(entry, dict) else entry
            for name in paths if isinstance(paths, list) else [paths]:
                if not isinstance(name, str) or not name:
                    source.report(at, "needs a file path (- other.yaml or path: other.yaml)")
                    continue
                absolute = self.absolute(name)
                if absolute in chain:
                    trail = " -> ".join(os.path.basename(p) for p in [*chain, absolute])
                    source.report(at, f"include has a cycle ({trail}); remove one include")
                    continue
                loaded = self.read(name, source, at)
                if loaded is None:
                    continue
                other, other_source = loaded
                other = dict(other)
                self.include(other, other_source, [*chain, absolute])
                services = other.get("services")
                if isinstance(services, dict):
                    self.extend(services, other_source, name, [])
                self._merge_resources(plain, source, other, other_source, name)

    def _merge_resources(
        self,
        plain: dict[str, Any],
        source: Source,
        other: dict[str, Any],
        other_source: Source,
        name: str,
    ) -> None:
        for section in ("services", "networks", "volumes", "secrets", "configs"):
            theirs = other.get(section)
            if not isinstance(theirs, dict):
                continue
            ours = plain.setdefault(section, {})
            if not isinstance(ours, dict):
                continue
            for key, value in theirs.items():
                if key in ours:
                    if section == "services" or ours[key] != value:
                        source.report(
                            (section, key),
                            f'{section[:-1]} "{key}" is also defined in {name}; rename one',
                        )
                    continue
                ours[key] = value
                source.adopt(other_source, (section, key), (section, key))

    def extend(
        self, services: dict[str, Any], source: Source, file_name: str, chain: list[str]
    ) -> None:
        """Resolve every `extends` of `services` (one file's) in place."""
        done: set[str] = set()
        for name in list(services):
            self._extend_one(services, name, source, file_name, [*chain], done)

    def _extend_one(
        self,
        services: dict[str, Any],
        name: str,
        source: Source,
        file_name: str,
        chain: list[str],
        done: set[str],
    ) -> Any:
        body = services.get(name)
        if name in done or not isinstance(body, dict) or "extends" not in body:
            return body
        here: Path = ("services", name, "extends")
        spec = body.pop("extends")
        done.add(name)
        if isinstance(spec, str):
            base_name, base_file = spec, ""
        elif isinstance(spec, dict) and isinstance(spec.get("service"), str):
            base_name, base_file = spec["service"], str(spec.get("file") or "")
        else:
            source.report(here, "needs a service name (extends: NAME or {service: NAME, file: F})")
            return body
        key = f"{self.absolute(base_file or file_name)}:{base_name}"
        mine = f"{self.absolute(file_name)}:{name}"
        if key in chain or key == mine:
            trail = " -> ".join(k.rsplit("/", 1)[-1] for k in [*chain, mine, key])
            source.report(here, f"extends has a cycle ({trail}); remove one extends")
            return body
        if base_file:
            loaded = self.read(base_file, source, here)
            if loaded is None:
                return body
            other, other_source = loaded
            theirs = other.get("services")
            if not isinstance(theirs, dict) or base_name not in theirs:
                source.report(here, f'service "{base_name}" is not in {base_file}')
                return body
            theirs = dict(theirs)
            base = self._extend_one(
                theirs, base_name, other_source, base_file, [*chain, mine], set()
            )
            base_source = other_source
        else:
            if base_name not in services:
                source.report(here, f'service "{base_name}" is not in {file_name}')
                return body
            base = self._extend_one(services, base_name, source, file_name, [*chain, mine], done)
            base_source = source
        merged = merge(base, body) if isinstance(base, dict) else body
        services[name] = merged
        source.adopt(base_source, ("services", base_name), ("services", name))
        return merged


def _plain(node: Any, path: Path, source: Source, env: dict[str, str], missing: set[str]) -> Any:
    """`node` as plain dicts/lists with strings interpolated, `x-*` keys dropped and YAML
    tags applied (`!reset`, `!override` as markers for merging, core tags converted)."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, TaggedScalar):
        return _tagged_scalar(str(node.value), tag or "", path, source, env, missing)
    if tag in ("!reset", "!override") and isinstance(node, CommentedMap | CommentedSeq):
        if tag == "!reset":
            return RESET
        return Override(_untagged(node, path, source, env, missing))
    if tag and not tag.startswith(_CORE) and isinstance(node, CommentedMap | CommentedSeq):
        source.report(path, _unknown_tag(tag))
    return _untagged(node, path, source, env, missing)


def _untagged(node: Any, path: Path, source: Source, env: dict[str, str], missing: set[str]) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = str(key)
            if not _is_text(name):
                source.report(path, _NOT_TEXT)
                continue
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
            try:
                source.lines[(*path, index)] = node.lc.item(index)[0] + 1
            except (KeyError, TypeError):  # a tagged sequence keeps no item places
                source.lines[(*path, index)] = (node.lc.line or 0) + 1
            items.append(_plain(value, (*path, index), source, env, missing))
        return items
    if isinstance(node, str):
        if not _is_text(node):
            source.report(path, _NOT_TEXT)
            return ""
        try:
            return interpolate(str(node), env, missing)
        except InterpolationError as error:
            source.report(path, str(error))
            return ""
    # ruamel's round-trip scalars (ScalarFloat, ScalarInt, ScalarBoolean) as plain values
    if isinstance(node, bool) or type(node).__name__ == "ScalarBoolean":
        return bool(node)
    if isinstance(node, int):
        width = getattr(node, "_width", None)
        digits = str(int(node))
        if width and width > len(digits) and set(digits) <= set("01234567"):
            return int(digits, 8)  # 0440: octal, as Compose's YAML reads file modes
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


_CORE = "tag:yaml.org,2002:"
_NOT_TEXT = "holds a lone surrogate escape (\\ud800-\\udfff), not text; write the character"


def _is_text(value: str) -> bool:
    """Whether `value` is encodable text: YAML's "\\ud800" escapes decode to lone surrogates."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _tagged_scalar(
    text: str, tag: str, path: Path, source: Source, env: dict[str, str], missing: set[str]
) -> Any:
    if tag == "!reset":
        return RESET
    if tag == "!override":
        return Override(_untagged(text, path, source, env, missing))
    kind = tag.removeprefix(_CORE) if tag.startswith(_CORE) else ""
    value = _untagged(text, path, source, env, missing)
    try:
        if kind == "str":
            return str(value)
        if kind == "int":
            return int(str(value), 0)
        if kind == "float":
            return float(str(value))
        if kind == "bool":
            return str(value).lower() in ("true", "yes", "on", "y")
        if kind == "null":
            return None
    except ValueError:
        source.report(path, f'"{value}" is not a valid !!{kind}')
        return value
    source.report(path, _unknown_tag(tag))
    return value


def _unknown_tag(tag: str) -> str:
    return f"unknown YAML tag {tag}; use !reset, !override or a core tag such as !!str"


_MANIFEST = mi.type_info(Manifest)


def _known_keys(data: Any, kind: Any, path: Path, source: Source) -> Any:
    """`data` without keys the model does not know; each one reported at its own line, with
    the nearest known key suggested, or why Carte refuses it."""
    if isinstance(kind, mi.UnionType):
        for member in kind.types:
            if isinstance(member, mi.StructType | mi.DictType) and isinstance(data, dict):
                return _known_keys(data, member, path, source)
            if isinstance(member, mi.ListType) and isinstance(data, list):
                return _known_keys(data, member, path, source)
        return data
    if isinstance(kind, mi.StructType) and isinstance(data, dict):
        fields = {f.encode_name: f for f in kind.fields}
        out = {}
        for key, value in data.items():
            field = fields.get(key)
            if field is None:
                source.report((*path, key), _unknown_key(key, kind.cls, list(fields)))
                continue
            out[key] = _known_keys(value, field.type, (*path, key), source)
        return out
    if isinstance(kind, mi.DictType) and isinstance(data, dict):
        return {k: _known_keys(v, kind.value_type, (*path, k), source) for k, v in data.items()}
    if isinstance(kind, mi.ListType) and isinstance(data, list):
        return [_known_keys(v, kind.item_type, (*path, i), source) for i, v in enumerate(data)]
    return data


def _unknown_key(key: str, owner: type, known: list[str]) -> str:
    if owner is Service and key in REFUSED_SERVICE_KEYS:
        return f'"{key}" is not supported by Carte: {REFUSED_SERVICE_KEYS[key]}'
    choices = [*known, *REFUSED_SERVICE_KEYS] if owner is Service else known
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f'unknown key "{key}"; {hint}remove it or prefix it with "x-"'


_SECTIONS: dict[str, tuple[Any, Any]] = {
    "services": (Service, {"image": "-"}),
    "networks": (NetworkDecl | None, None),
    "volumes": (VolumeDecl | None, None),
    "secrets": (FileDecl, {"content": "-"}),
    "configs": (FileDecl, {"content": "-"}),
}


def _decode(plain: dict[str, Any], source: Source) -> Manifest | None:
    """msgspec stops at the first problem and names no mapping key in its paths (`[...]`):
    each service, network, volume, secret and config is decoded alone, so every entry's
    problem is reported with its own name. An entry that fails is replaced by a blank one,
    so the checks of the others still run (their problems are reported too)."""
    plain = dict(plain)
    for section, (kind, blank) in _SECTIONS.items():
        entries = plain.get(section)
        if not isinstance(entries, dict):
            continue
        entries = dict(entries)
        for name, body in entries.items():
            try:
                msgspec.convert(body, kind, strict=False)
            except msgspec.ValidationError as error:
                _report_decode(str(error), source, (section, name), body, kind)
                entries[name] = blank
        plain[section] = entries
    try:
        return msgspec.convert(plain, Manifest, strict=False)
    except msgspec.ValidationError as error:
        _report_decode(str(error), source, (), plain, Manifest)
        return None


def _is_service(path: Path) -> bool:
    return len(path) == 2 and path[0] == "services"


_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _report_decode(text: str, source: Source, prefix: Path, data: Any, kind: Any) -> None:
    match = _AT.match(text)
    message = match.group("message") if match else text

    def fails_alone(narrowed: Any) -> bool:
        """Whether `data` with one mapping narrowed to one key still fails the same way."""
        try:
            msgspec.convert(narrowed, kind, strict=False)
        except msgspec.ValidationError as error:
            return str(error) == text
        return False

    raw = _path(match.group("path")) if match else ()
    path = (*prefix, *_resolve(raw, data, data, (), fails_alone))
    unknown = _UNKNOWN.match(message)
    if unknown:
        field = unknown.group("field")
        source.report((*path, field), f'unknown key "{field}"; remove it or prefix it with "x-"')
        return
    required = _MISSING.match(message)
    if required:
        source.report(path, f'key "{required.group("field")}" is required')
        return
    source.report(path, message)


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


def _resolve(path: Path, data: Any, whole: Any, above: Path, fails_alone: Any) -> Path:
    """`path` with each unnamed mapping key replaced by the key whose entry alone still makes
    the whole document fail the same way (else the first that holds the rest of the path)."""
    if not path:
        return ()
    head, rest = path[0], path[1:]
    if head == _ANY_KEY and isinstance(data, dict):
        holding = [key for key, value in data.items() if _holds(value, rest)]
        chosen = next(
            (k for k in holding if len(holding) > 1 and fails_alone(_narrow(whole, above, k))),
            holding[0] if holding else None,
        )
        if chosen is None:
            return ()
        return (chosen, *_resolve(rest, data[chosen], whole, (*above, chosen), fails_alone))
    if isinstance(data, dict) and head in data:
        return (head, *_resolve(rest, data[head], whole, (*above, head), fails_alone))
    if isinstance(data, list) and isinstance(head, int) and head < len(data):
        return (head, *_resolve(rest, data[head], whole, (*above, head), fails_alone))
    return (head,)


def _narrow(whole: Any, above: Path, key: Any) -> Any:
    """A copy of `whole` where the mapping at `above` keeps only `key`."""
    if not above:
        return {key: whole[key]} if isinstance(whole, dict) else whole
    head = above[0]
    if isinstance(whole, dict):
        return {**whole, head: _narrow(whole[head], above[1:], key)}
    if isinstance(whole, list) and isinstance(head, int):
        copy = list(whole)
        copy[head] = _narrow(whole[head], above[1:], key)
        return copy
    return whole


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
