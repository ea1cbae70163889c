"""carte.yaml: typed configuration, strict loading with file:line errors, overrides, reload.

The file is parsed with ruamel.yaml's round-trip loader (it remembers line numbers) and
converted into frozen msgspec Structs that forbid unknown fields. Any problem becomes one
`ConfigError` line naming the file, the line and the key, e.g.::

    config/carte.yaml:12: unknown key "handlrs" in "daemon"; expected one of root, run_root, ...

Every default lives both here and, with comments, in config/carte.yaml (a test keeps the
two equal). This module holds only the daemon's own sections (daemon, handlers, bus,
supervisor, store, cluster); each handler declares its own typed ``Options`` (see `OptionsSpec`),
read from ``handlers.options.<name>`` or from the top-level section the handler claims
(``network:``, ``containers:``...), and checked here with the same file:line errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec

from carte.api.errors import InvalidArgument

LogLevel = Literal["debug", "info", "warning", "error"]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config section: frozen, keyword-only, unknown keys rejected."""


class DaemonConfig(_Section, frozen=True, kw_only=True):
    root: str = "/var/lib/carte"
    run_root: str = "/run/carte"
    socket: str | None = None
    """None means ``<run_root>/carte.sock``."""
    socket_group: str = "carte"
    log_level: LogLevel = "info"
    shutdown_timeout: Positive = 10.0

    @property
    def socket_path(self) -> Path:
        return Path(self.socket) if self.socket else Path(self.run_root) / "carte.sock"


class HandlersConfig(_Section, frozen=True, kw_only=True):
    enabled: list[str] | None = None
    """None runs every installed handler; a list runs only those."""
    disabled: list[str] = []
    options: dict[str, dict[str, Any]] = {}
    """Per-handler options by handler name, as written (checked against each handler's
    ``Options`` when loaded with the handlers' `OptionsSpec`; ``ctx.options`` is the struct)."""


class BusConfig(_Section, frozen=True, kw_only=True):
    journal_size: Count = 10_000
    subscriber_buffer: Count = 256


class BackoffConfig(_Section, frozen=True, kw_only=True):
    initial: Positive = 0.1
    factor: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    max: Positive = 30.0
    reset: Positive = 60.0
    """Running this long without a crash resets the delay to ``initial``."""

    def delays(self) -> list[float]:
        """The first few delays, for documentation and tests."""
        out, delay = [], self.initial
        for _ in range(6):
            out.append(delay)
            delay = min(delay * self.factor, self.max)
        return out


class SupervisorConfig(_Section, frozen=True, kw_only=True):
    backoff: BackoffConfig = BackoffConfig()


EtcdEndpoint = Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s]+$")]
StoreBackend = Literal["sqlite", "etcd"]


class StoreTlsConfig(_Section, frozen=True, kw_only=True):
    """Files for https:// etcd endpoints; all null: plain http (loopback or a trusted LAN)."""

    ca: str | None = None
    """CA bundle that signed etcd's server certificate; null: the system's CAs."""
    cert: str | None = None
    """Client certificate etcd asks for (--client-cert-auth); needs ``key``."""
    key: str | None = None


class StoreConfig(_Section, frozen=True, kw_only=True):
    """Where the state lives: SQLite in ``<root>/state.db`` (one machine) or etcd (a cluster)."""

    backend: StoreBackend = "sqlite"
    endpoints: list[EtcdEndpoint] = []
    """etcd client URLs (``http://HOST:PORT`` or ``https://``), tried in order; for etcd."""
    prefix: str = "carte/"
    """Every key is stored under this prefix in etcd, so clusters can share one etcd."""
    tls: StoreTlsConfig = StoreTlsConfig()

    def __post_init__(self) -> None:
        if self.backend == "etcd" and not self.endpoints:
            raise ValueError(
                'backend "etcd" needs endpoints, e.g. endpoints: ["http://127.0.0.1:2379"]'
            )
        if (self.tls.cert is None) != (self.tls.key is None):
            raise ValueError("tls.cert and tls.key go together; give both or neither")


TcpAddress = Annotated[str, msgspec.Meta(pattern=r"^tcp://[^/\s]+:[0-9]+$")]


class ClusterConfig(_Section, frozen=True, kw_only=True):
    """This daemon's place in a cluster. ``carte cluster init`` / ``carte node join`` keep
    theirs in ROOT/cluster/joined.json, which wins over this section (flags win over both)."""

    role: Literal["none", "control", "worker"] = "none"
    name: str | None = None
    """Node name; null: the host name."""
    server: TcpAddress | None = None
    """A worker's control plane, tcp://HOST:PORT."""
    listen: TcpAddress | None = None
    """Serve the API over mutual TLS on tcp://ADDR:PORT too (besides the unix socket)."""
    advertise: str | None = None
    """The address other nodes reach this one at; null: the listen address."""
    insecure: bool = False
    """Plain HTTP on ``listen``: allowed only for a loopback address."""
    node_ttl: PositiveInt = 10
    """Seconds without a heartbeat before a node is down (its lease TTL)."""
    leader_ttl: PositiveInt = 10
    """TTL of the leader's lease: how long a dead leader keeps the role."""

    def __post_init__(self) -> None:
        if self.insecure and not is_loopback_listen(self.listen):
            raise ValueError(
                f"insecure (plain HTTP) is allowed only on a loopback address, not "
                f"{self.listen or 'no listen address'}; drop --insecure to serve mutual TLS"
            )


def is_loopback_listen(listen: str | None) -> bool:
    """Whether ``tcp://HOST:PORT`` binds a loopback address only."""
    import ipaddress

    if not listen:
        return False
    host = listen.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Config(_Section, frozen=True, kw_only=True):
    daemon: DaemonConfig = DaemonConfig()
    handlers: HandlersConfig = HandlersConfig()
    bus: BusConfig = BusConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    store: StoreConfig = StoreConfig()
    cluster: ClusterConfig = ClusterConfig()


class HandlerOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of a handler's ``Options``: frozen, keyword-only, unknown keys rejected."""


class NoOptions(HandlerOptions, frozen=True, kw_only=True):
    """The options of a handler that takes none: any key is an error."""


@dataclass(frozen=True)
class OptionsSpec:
    """What carte.yaml holds for one handler: its name, its ``Options`` struct and, for the
    built-ins that had one before handlers declared options, the top-level section that
    carries them (``network:``); the same options may also be written under
    ``handlers.options.<name>`` (not both). Several handlers may share one section."""

    name: str
    options: type[msgspec.Struct] = NoOptions
    section: str = ""


class ConfigError(InvalidArgument):
    """carte.yaml (or a flag) is invalid; the message is one line naming file, line and key."""


DEFAULT_CONFIG_FILE = Path(__file__).resolve().parents[2] / "config" / "carte.yaml"

# Dotted paths (or prefixes) a SIGHUP may change in a running daemon. Everything else needs
# a restart: paths and sockets are bound at start, the handler set and channel sizes too.
RELOADABLE = (
    "daemon.log_level",
    "daemon.shutdown_timeout",
    "handlers.options",
    "bus.journal_size",
    "supervisor.backoff",
)

# --- loading --------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None, handlers: Sequence[OptionsSpec] | None = None
) -> Config:
    """Read and validate carte.yaml at ``path``; None gives the built-in defaults.

    ``handlers`` (the installed handlers' `OptionsSpec`) checks every handler's options and
    accepts the top-level sections they claim; without it ``handlers.options`` is taken as
    written and no other top-level section is known. Raises ConfigError (one line:
    ``file:line: problem; fix``) for an unreadable file, malformed YAML, an unknown key or a
    value of the wrong type.
    """
    if path is None:
        return Config()
    shown = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(
            f"{shown}: cannot read config file ({error.strerror}); check the --config path"
        ) from None
    return parse_config(text, shown, handlers)


def parse_config(
    text: str, source: str = "carte.yaml", handlers: Sequence[OptionsSpec] | None = None
) -> Config:
    """Validate YAML ``text``; ``source`` names it in errors (see `load_config`)."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    from carte.yaml_bounds import YamlLimitError, load_bounded

    try:
        document = load_bounded(text)
    except YamlLimitError as error:
        raise ConfigError(f"{source}:{error.line}: {error.message}") from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = (error.problem or error.context or "invalid syntax").strip()
        raise ConfigError(f"{source}:{line}: malformed YAML: {problem}; fix the syntax") from None
    except YAMLError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "invalid"
        raise ConfigError(f"{source}: malformed YAML: {first_line}; fix the syntax") from None
    if document is None:
        return Config()
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"{source}:1: expected a mapping of sections (daemon:, handlers:, ...), "
            f"got {_yaml_type(document)}; see config/carte.yaml for the layout"
        )
    plain = _plain(document)
    claimed = {spec.section for spec in handlers or () if spec.section}
    sections = {key: plain.pop(key) for key in list(plain) if key in claimed}
    try:
        config = msgspec.convert(plain, Config)
    except msgspec.ValidationError as error:
        message = str(error)
        if claimed and _UNKNOWN.search(message) and " - at `$" not in message:
            known = ", ".join([*(f.name for f in msgspec.structs.fields(Config)), *claimed])
            key = _UNKNOWN.search(message)["key"]  # type: ignore[index]
            raise ConfigError(
                f'{source}:{_line_of(document, [key])}: unknown key "{key}" in the top level; '
                f"expected one of {known}"
            ) from None
        raise ConfigError(_explain(message, document, source)) from None
    if handlers is None:
        return config
    return _with_handler_options(config, handlers, sections, document, source)


def _with_handler_options(
    config: Config,
    handlers: Sequence[OptionsSpec],
    sections: dict[str, Any],
    document: Any,
    source: str,
) -> Config:
    """Check each handler's options where they are written; keep them by handler name."""
    written = config.handlers.options
    names = {spec.name for spec in handlers}
    for name in written:
        if name not in names:
            line = _line_of(document, ["handlers", "options", name])
            raise ConfigError(
                f'{source}:{line}: "handlers.options.{name}": no installed handler is named '
                f'"{name}"; use one of {", ".join(sorted(names))}'
            )
    options: dict[str, dict[str, Any]] = {}
    for spec in handlers:
        where: list[str | int] = ["handlers", "options", spec.name]
        raw = written.get(spec.name)
        if spec.section in sections:
            if raw is not None:
                line = _line_of(document, where)
                raise ConfigError(
                    f'{source}:{line}: options of handler "{spec.name}" are given twice, in '
                    f'"{spec.section}" and in "handlers.options.{spec.name}"; keep one'
                )
            raw, where = sections[spec.section], [spec.section]
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise ConfigError(
                f'{source}:{_line_of(document, where)}: "{_dotted(where)}" must be a mapping, '
                f"got {_yaml_type(raw)}; fix the value"
            )
        try:
            msgspec.convert(raw, spec.options)
        except msgspec.ValidationError as error:
            message = _at_path(str(error), where)
            raise ConfigError(_explain(message, document, source, options=spec)) from None
        options[spec.name] = raw
    return msgspec.structs.replace(
        config, handlers=msgspec.structs.replace(config.handlers, options=options)
    )


def handler_options(config: Config, spec: OptionsSpec) -> Any:
    """Handler ``spec.name``'s options from ``config`` as its ``Options`` struct.

    Raises ConfigError naming the handler when they do not fit (a config that was not loaded
    with the handlers' specs, or a flag override).
    """
    raw = config.handlers.options.get(spec.name, {})
    try:
        return msgspec.convert(raw, spec.options)
    except msgspec.ValidationError as error:
        where: list[str | int] = ["handlers", "options", spec.name]
        document = {"handlers": {"options": {spec.name: raw}}}
        message = _at_path(str(error), where)
        raise ConfigError(
            _explain(message, document, "carte.yaml", with_lines=False, options=spec)
        ) from None


def _at_path(message: str, where: list[str | int]) -> str:
    """``message`` from converting the mapping at ``where``, with its path made absolute."""
    prefix = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)
    if " - at `$" in message:
        return message.replace(" - at `$", f" - at `${prefix}", 1)
    return f"{message} - at `${prefix}`"


def apply_overrides(config: Config, overrides: Mapping[str, object]) -> Config:
    """Return ``config`` with dotted-path values replaced (command-line flags win).

    ``None`` values are ignored (a flag that was not given). Example:
    ``apply_overrides(cfg, {"daemon.root": args.root, "daemon.log_level": args.log_level})``.
    Raises ConfigError naming the key for an unknown path or a value of the wrong type.
    """
    data: dict[str, Any] = msgspec.to_builtins(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f'override "{dotted}": unknown section "{part}"')
            node = child
        if leaf not in node and not _is_free_mapping(parents):
            raise ConfigError(
                f'override "{dotted}": unknown key "{leaf}"; expected one of {", ".join(node)}'
            )
        node[leaf] = str(value) if isinstance(value, Path) else value
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as error:
        raise ConfigError(
            _explain(str(error), data, "command-line flag", with_lines=False)
        ) from None


def _is_free_mapping(parents: list[str]) -> bool:
    return parents[:2] == ["handlers", "options"]


# --- reload ---------------------------------------------------------------------------------


def reload(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """Compare two configs: (changed paths a running daemon applies, changed paths it cannot).

    Use `reloaded` to get the config the daemon should run with afterwards.
    """
    applied: list[str] = []
    not_reloadable: list[str] = []
    for path in _changed_paths(msgspec.to_builtins(old), msgspec.to_builtins(new), ""):
        (applied if _reloadable(path) else not_reloadable).append(path)
    return applied, not_reloadable


def reloaded(old: Config, new: Config) -> Config:
    """``old`` with every reloadable change from ``new`` applied, the rest kept as running."""
    data: dict[str, Any] = msgspec.to_builtins(old)
    fresh: dict[str, Any] = msgspec.to_builtins(new)
    for path in reload(old, new)[0]:
        *parents, leaf = path.split(".")
        source, target = fresh, data
        for part in parents:
            source, target = source[part], target.setdefault(part, {})
        if leaf in source:
            target[leaf] = source[leaf]
        else:
            target.pop(leaf, None)
    return msgspec.convert(data, Config)


def _reloadable(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + ".") for prefix in RELOADABLE)


def _changed_paths(old: object, new: object, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            child = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                paths.append(child)
            else:
                paths.extend(_changed_paths(old[key], new[key], child))
        return paths
    return [] if old == new else [prefix]


# --- error messages -------------------------------------------------------------------------

_UNKNOWN = re.compile(
    r"Object contains unknown field `(?P<key>[^`]*)`(?: - at `\$(?P<path>[^`]*)`)?"
)
_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<type>[^`]*)`(?P<rest>.*?)(?:, got `[^`]*`)?$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _explain(
    message: str,
    document: Any,
    source: str,
    *,
    with_lines: bool = True,
    options: OptionsSpec | None = None,
) -> str:
    """Turn a msgspec validation message into ``file:line: problem; fix``."""
    unknown = _UNKNOWN.search(message)
    if unknown:
        parts = _split_path(unknown["path"] or "")
        key = unknown["key"]
        line = f":{_line_of(document, [*parts, key])}" if with_lines else ""
        where = f'"{_dotted(parts)}"' if parts else "the top level"
        known = ", ".join(_fields_at(parts, options))
        return f'{source}{line}: unknown key "{key}" in {where}; expected one of {known}'
    at = _AT.match(message)
    if not at:
        return f"{source}: {_lower_first(message)}; see config/carte.yaml"
    parts = _split_path(at["path"])
    line = f":{_line_of(document, parts)}" if with_lines else ""
    key = _dotted(parts)
    value = _value_at(document, parts)
    got = f"got {_yaml_type(value)}{_short(value)}" if value is not _MISSING else ""
    problem = at["message"]
    expected = _EXPECTED.match(problem)
    if expected:
        words = " or ".join(
            _TYPE_WORDS.get(word.strip(), word.strip()) for word in expected["type"].split("|")
        )
        rest = expected["rest"]
        if parts[:2] == ["store", "endpoints"] and "regex" in rest:
            rest = " like http://HOST:PORT or https://HOST:PORT"
        return f'{source}{line}: "{key}" must be {words}{rest}, {got}; fix the value'
    if problem.startswith("Invalid enum value"):
        allowed = _allowed_values(parts)
        return f'{source}{line}: "{key}" must be one of {allowed}, {got}; fix the value'
    if isinstance(value, Mapping):  # a section's own check (__post_init__) says it all
        return f'{source}{line}: "{key}": {_lower_first(problem)}; fix the section'
    return f'{source}{line}: "{key}": {_lower_first(problem)}, {got}; fix the value'


def _dotted(parts: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _allowed_values(parts: list[str | int]) -> str:
    if parts == ["daemon", "log_level"]:
        return ", ".join(get_args(LogLevel))
    if parts == ["store", "backend"]:
        return ", ".join(get_args(StoreBackend))
    return "the documented values"


def _split_path(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _PATH_PART.findall(path)]


_MISSING = object()


def _value_at(document: Any, parts: list[str | int]) -> Any:
    node = document
    for part in parts:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _line_of(document: Any, parts: list[str | int]) -> int:
    """1-based line of the deepest element of ``parts`` found in the round-trip document."""
    line, node = 0, document
    for part in parts:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                line = lc.key(part)[0] if isinstance(part, str) else lc.item(part)[0]
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return line + 1


def _fields_at(parts: list[str | int], options: OptionsSpec | None = None) -> list[str]:
    """Field names of the struct at ``parts`` (in Config, or in a handler's options)."""
    struct: Any = Config
    if options is not None:
        depth = 1 if options.section and parts[:1] == [options.section] else 3
        struct, parts = options.options, parts[depth:]
    for part in parts:
        hints = msgspec.structs.fields(struct) if isinstance(struct, type) else ()
        field = next((f for f in hints if f.name == part), None)
        if field is None or not (
            isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)
        ):
            return []
        struct = field.type
    return [f.name for f in msgspec.structs.fields(struct)] or ["(none yet)"]


def _plain(value: Any) -> Any:
    """Round-trip YAML nodes to plain Python values msgspec converts strictly."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


# How an error names what a YAML value is; bool before int (a bool is an int to Python).
_YAML_TYPES: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (Mapping, "a mapping"),
    (list, "a list"),
)


def _yaml_type(value: Any) -> str:
    return next(
        (name for kind, name in _YAML_TYPES if isinstance(value, kind)), type(value).__name__
    )


def _short(value: Any) -> str:
    if isinstance(value, Mapping | list) or value is None:
        return ""
    text = msgspec.json.encode(_plain(value)).decode()
    return " " + (text if len(text) <= 40 else text[:37] + "...")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
