"""How the client prints: aligned tables for people, JSON for scripts (`--format json`).

JSON goes through carte.cli.compact_json: the `json` package, with the `re` it imports, is a
third of a plain command's start; templates import it where they use it.
"""

from __future__ import annotations

import sys

from carte.cli import compact_json

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TextIO


class Output:
    """Prints rows as a table or as JSON, depending on the chosen format."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        self.format = fmt
        self.stream = stream or sys.stdout

    @property
    def json(self) -> bool:
        return self.format == "json"

    def data(self, value: Any) -> None:
        """Print a value as indented JSON."""
        self.stream.write(compact_json.indented(value) + "\n")

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Print rows under upper-case headers, columns padded to the widest cell."""
        cells = [[str(h).upper() for h in headers], *[[str(c) for c in row] for row in rows]]
        self._aligned(cells)

    def _aligned(self, cells: Sequence[Sequence[str]]) -> None:
        widths: list[int] = []
        for row in cells:
            for at, cell in enumerate(row):
                if at == len(widths):
                    widths.append(0)
                widths[at] = max(widths[at], len(cell))
        for row in cells:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stream.write("   ".join(padded).rstrip() + "\n")

    def templated(
        self,
        template: str,
        items: Sequence[dict[str, Any]],
        fields: Callable[[dict[str, Any]], dict[str, Any]],
        headers: dict[str, str],
    ) -> None:
        """A list command's `--format TEMPLATE` as Docker's: the template once per item, over
        the item's Docker-named `fields` (and its own keys); `table TEMPLATE` adds a header
        line (each field named by `headers`, else as Docker derives it: CreatedAt -> CREATED
        AT) and aligns the columns the template separates with tabs. Raises TemplateError."""
        import re

        body = template.removeprefix("table ")
        lines = [render_template(body, {**item, **fields(item)}) for item in items]
        if not template.startswith("table "):
            for line in lines:
                self.line(line)
            return
        named = {
            name: headers.get(name) or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()
            for name in re.findall(r"\.([A-Za-z]\w*)", body)
        }
        heading = render_template(body, named)
        self._aligned([line.split("\t") for line in [heading, *lines]])

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """Print ``Name: value`` lines, names aligned."""
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            self.stream.write(f"{name + ':':<{width + 1}} {value}\n")

    def pruned(self, result: dict[str, Any], title: str, *, space: bool = True) -> None:
        """A prune's result: as is in JSON; else ``Deleted <title>:`` over one name a line
        (when any went) and, with `space`, the bytes reclaimed (Docker's wording)."""
        if self.json:
            self.data(result)
            return
        if result["deleted"]:
            self.line(f"Deleted {title}:")
            for name in result["deleted"]:
                self.line(name)
        if space:
            self.line(f"Total reclaimed space: {result.get('space_reclaimed', 0)}B")

    def listing(
        self,
        items: list[dict[str, Any]],
        headers: Sequence[str],
        row: Callable[[dict[str, Any]], Sequence[Any]],
        *,
        quiet_key: str | None = None,
    ) -> None:
        """A list command's answer: the items as JSON; with `quiet_key` (``-q``) that field of
        each item, one a line; else a table of ``row(item)`` under `headers`."""
        if self.json:
            self.data(items)
        elif quiet_key is not None:
            for item in items:
                self.line(str(item[quiet_key]))
        else:
            self.table(headers, [row(item) for item in items])


# --- Docker's Go templates (`--format '{{...}}'`) -------------------------------------------

_SPECIAL_NAMES = {"oomkilled": "oom_killed", "id": "id", "restartcount": "restart_count"}


def _snake(name: str) -> str:
    """Docker's field names (ExitCode, OOMKilled, RestartCount) -> this API's (exit_code...)."""
    special = _SPECIAL_NAMES.get(name.lower())
    if special:
        return special
    out = ""
    for index, char in enumerate(name):
        if char.isupper() and index and not name[index - 1].isupper():
            out += "_"
        out += char.lower()
    return out


class TemplateError(ValueError):
    """A template this subset cannot read (printed as one line, exit 1... as Docker's 64)."""


_NO_VALUE = "<no value>"


def render_template(template: str, value: Any) -> str:
    """The subset of Docker's Go templates scripts use over `value`: `{{.A.B}}` (PascalCase
    or this API's snake_case names), `{{.}}`, `{{range .A}}...{{end}}` (`.` is each item;
    `{{range $k, $v := .A}}` names them), `{{if .A}}...{{else}}...{{end}}`, pipelines and
    parentheses (`{{.A | printf "%s"}}`, `{{(index .A 0).B}}`), Go's functions (printf, print,
    println, len, index, eq, ne, lt, le, gt, ge, not, and, or) and Docker's (json, join,
    split, lower, upper, title, truncate, pad). Values print as Go prints them ([a b],
    map[k:v]); a missing field renders as <no value>; anything else raises TemplateError."""
    import re

    text = template.replace("\\t", "\t").replace("\\n", "\n")
    tokens = re.split(r"({{-?.*?-?}})", text)
    tree, rest = _parse(tokens, 0, ())
    if rest != len(tokens):
        raise TemplateError(f'template "{template}": {{{{end}}}} without range or if')
    return "".join(_evaluate(tree, value, {}))


def _parse(tokens: list[str], at: int, closers: tuple[str, ...]) -> tuple[list[Any], int]:
    """Nodes until one of `closers` ({{end}}, {{else}}); (nodes, index of the closer)."""
    nodes: list[Any] = []
    while at < len(tokens):
        token = tokens[at]
        if not (token.startswith("{{") and token.endswith("}}")):
            if token:
                nodes.append(("text", token))
            at += 1
            continue
        action = token[2:-2].strip("-").strip()
        word = action.split(" ", 1)[0]
        if word in ("end", "else"):
            if word not in closers and not (word == "end" and "else" in closers):
                raise TemplateError(f"{{{{{word}}}}} without range or if")
            return nodes, at
        if word in ("range", "if"):
            body, at = _parse(tokens, at + 1, ("end", "else"))
            other: list[Any] = []
            if at < len(tokens) and tokens[at][2:-2].strip("-").strip() == "else":
                other, at = _parse(tokens, at + 1, ("end",))
            if at >= len(tokens):
                raise TemplateError(f"{{{{{action}}}}} has no {{{{end}}}}")
            nodes.append((word, action[len(word) :].strip(), body, other))
            at += 1
            continue
        nodes.append(("action", action))
        at += 1
    if closers:
        raise TemplateError("a range or if has no {{end}}")
    return nodes, at


def _evaluate(nodes: list[Any], dot: Any, names: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "action":
            out.append(_show(_expression(node[1], dot, names)))
        elif node[0] == "if":
            found = _expression(node[1], dot, names)
            out += _evaluate(node[2] if _truthy(found) else node[3], dot, names)
        else:
            variables, _, expression = node[1].rpartition(":=")
            items = _expression(expression.strip(), dot, names)
            pairs = sorted(items.items()) if isinstance(items, dict) else list(enumerate(items))
            if not isinstance(items, dict | list) or not pairs:
                out += _evaluate(node[3], dot, names)
                continue
            declared = [v.strip() for v in variables.split(",") if v.strip()]
            for key, item in pairs:
                scope = dict(names)
                if len(declared) == 2:
                    scope[declared[0]], scope[declared[1]] = key, item
                elif declared:
                    scope[declared[0]] = item
                out += _evaluate(node[2], item, scope)
    return out


def _show(found: Any) -> str:
    """A value as Go's templates print it: lists as [a b], maps as map[k:v] (keys sorted)."""
    if isinstance(found, list):
        return "[" + " ".join(_show(item) for item in found) + "]"
    if isinstance(found, dict):
        return "map[" + " ".join(f"{k}:{_show(found[k])}" for k in sorted(found)) + "]"
    if isinstance(found, bool):
        return "true" if found else "false"
    return "" if found is None else str(found)


def _json(value: Any) -> str:
    """Docker's `json` function: compact, HTML characters left as they are."""
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_STRING = r'"(?:[^"\\]|\\.)*"|`[^`]*`'
_TOKEN = _STRING + r"|[()|]|[^\s()|]+"


def _expression(action: str, dot: Any, names: dict[str, Any]) -> Any:
    """A pipeline (`.A | printf "%s"`) of commands: a function with its arguments, or one
    operand (a field, a variable, a literal, a parenthesised pipeline with fields after it)."""
    import re

    tokens = re.findall(_TOKEN, action)
    if any(t[0] in '"`' and not re.fullmatch(_STRING, t) for t in tokens):
        raise TemplateError(f"{{{{{action}}}}}: an unterminated quote")
    value, at = _pipeline(tokens, 0, dot, names, action)
    if at != len(tokens):
        raise TemplateError(f"{{{{{action}}}}}: unexpected {tokens[at]!r}")
    return value


def _pipeline(tokens: list[str], at: int, dot: Any, names: dict[str, Any], action: str) -> Any:
    piped: list[Any] = []
    while True:
        words: list[Any] = []
        while at < len(tokens) and tokens[at] not in ("|", ")"):
            if tokens[at] == "(":
                inner, at = _pipeline(tokens, at + 1, dot, names, action)
                if at >= len(tokens) or tokens[at] != ")":
                    raise TemplateError(f"{{{{{action}}}}}: unclosed (")
                at += 1
                if at < len(tokens) and tokens[at].startswith("."):
                    inner = _walk(inner, tokens[at])
                    at += 1
                words.append(("value", inner))
            else:
                words.append(tokens[at])
                at += 1
        if not words:
            raise TemplateError(f"{{{{{action}}}}}: an empty command")
        piped = [_command(words, piped, dot, names, action)]
        if at < len(tokens) and tokens[at] == "|":
            at += 1
            continue
        return piped[0], at


def _command(
    words: list[Any], piped: list[Any], dot: Any, names: dict[str, Any], action: str
) -> Any:
    head = words[0]
    if isinstance(head, str) and head in _FUNCTIONS:
        arguments = [_operand(word, dot, names) for word in words[1:]] + piped
        try:
            return _FUNCTIONS[head](*arguments)
        except (TypeError, ValueError, IndexError, KeyError) as error:
            raise TemplateError(f"{{{{{action}}}}}: error calling {head}: {error}") from None
    if len(words) == 1 and not piped:
        return _operand(head, dot, names)
    name = head if isinstance(head, str) else "(...)"
    raise TemplateError(f'{{{{{action}}}}}: "{name}" is not a field or a known function')


def _operand(word: Any, dot: Any, names: dict[str, Any]) -> Any:
    if isinstance(word, tuple):
        return word[1]
    if word.startswith('"'):
        import json

        return json.loads(word)
    if word.startswith("`"):
        return word[1:-1]
    if word in ("true", "false"):
        return word == "true"
    if word == "nil":
        return None
    if word.lstrip("-").isdigit():
        return int(word)
    if word.startswith(("$", ".")):
        return _field(word, dot, names)
    if word in _FUNCTIONS:  # a function without arguments, as an argument
        return _FUNCTIONS[word]()
    raise TemplateError(f'function "{word}" not defined')


def _index(found: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(found, dict):
            found = found.get(key, _NO_VALUE)
        elif isinstance(found, list) and str(key).isdigit() and int(key) < len(found):
            found = found[int(key)]
        else:
            raise IndexError(f"index {key!r} out of range or not found")
    return found


def _printf(template: str, *values: Any) -> str:
    """Go's printf over the verbs scripts use: %s %v %d %q %x %t %%, with flags and width."""
    import re

    remaining = list(values)

    def verb(match: re.Match[str]) -> str:
        spec, kind = match.group(1), match.group(2)
        if kind == "%":
            return "%"
        if not remaining:
            return f"%!{kind}(MISSING)"
        value = remaining.pop(0)
        if kind == "d":
            return ("%" + spec + "d") % int(value)
        if kind == "x":
            return ("%" + spec + "x") % int(value)
        if kind == "q":
            import json

            return ("%" + spec + "s") % json.dumps(_show(value), ensure_ascii=False)
        return ("%" + spec + "s") % _show(value)

    return re.sub(r"%([-+# 0]*\d*(?:\.\d+)?)([svdqxt%])", verb, template)


def _truthy(value: Any) -> bool:
    return bool(value) and value != _NO_VALUE


def _go_print(*values: Any) -> str:
    """Go's fmt.Sprint: a space only between operands when neither is a string."""
    out = ""
    for at, value in enumerate(values):
        if at and not isinstance(value, str) and not isinstance(values[at - 1], str):
            out += " "
        out += _show(value)
    return out


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "lower": lambda value: _show(value).lower(),
    "upper": lambda value: _show(value).upper(),
    "title": lambda value: _show(value).title(),
    "split": lambda value, sep: _show(value).split(sep),
    "join": lambda items, sep: sep.join(_show(item) for item in items),
    "truncate": lambda value, length: _show(value)[: int(length)],
    "pad": lambda value, left, right: " " * int(left) + _show(value) + " " * int(right),
    "len": lambda value: len(value),
    "index": _index,
    "printf": _printf,
    "print": _go_print,
    "println": lambda *values: " ".join(_show(v) for v in values) + "\n",
    "eq": lambda a, *others: any(a == other for other in others),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda value: not _truthy(value),
    "and": lambda *values: next((v for v in values if not _truthy(v)), values[-1]),
    "or": lambda *values: next((v for v in values if _truthy(v)), values[-1]),
}


def _field(path: str, dot: Any, names: dict[str, Any]) -> Any:
    """`.A.B` from `dot`, `$v.A` from a range variable."""
    if path.startswith("$"):
        name, _, rest = path.partition(".")
        if name not in names and name != "$":
            raise TemplateError(f'template variable "{name}" is not defined')
        return _walk(names.get(name, dot), "." + rest if rest else ".")
    return _walk(dot, path)


def _walk(current: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if not isinstance(current, dict):
            return _NO_VALUE
        key = part if part in current else _snake(part)
        if key not in current:
            return _NO_VALUE
        current = current[key]
    return current


# --- Docker-shaped documents ----------------------------------------------------------------


def _ports(ports: list[dict[str, Any]], any_ip: str, any_port: str) -> dict[str, Any]:
    """Published ports as Docker keys them: {"80/tcp": [{"HostIp", "HostPort"}]}."""
    shaped: dict[str, Any] = {}
    for port in ports:
        key = f"{port['container_port']}/{port.get('protocol', 'tcp')}"
        host_port = port.get("host_port") or 0
        shaped.setdefault(key, []).append(
            {
                "HostIp": port.get("host_ip") or any_ip,
                "HostPort": str(host_port) if host_port else any_port,
            }
        )
    return shaped


def docker_container(details: dict[str, Any]) -> dict[str, Any]:
    """`carte inspect`'s document with Docker's PascalCase keys added beside this API's own
    (`.Id`, `.Name` with its "/", `.State.Status`, `.Config.Env`, `.HostConfig.Memory`,
    `.NetworkSettings.Networks.NAME.IPAddress`, `.Mounts`...), so scripts written for
    `docker inspect` read it unchanged; the snake_case keys stay for Carte's own users."""
    config: dict[str, Any] = details.get("config") or {}
    state: dict[str, Any] = details.get("state") or {}
    resources: dict[str, Any] = config.get("resources") or {}
    restart: dict[str, Any] = config.get("restart") or {}
    health = state.get("health") or None
    networks = {
        endpoint["network"]: {
            "IPAddress": endpoint.get("ip_address", ""),
            "IPPrefixLen": endpoint.get("prefix_len", 0),
            "Gateway": endpoint.get("gateway", ""),
            "MacAddress": endpoint.get("mac_address", ""),
            "Aliases": endpoint.get("aliases") or None,
            "NetworkID": endpoint["network"],
        }
        for endpoint in details.get("endpoints") or []
    }
    first = next(iter(networks.values()), {})
    command = [*(config.get("entrypoint") or []), *(config.get("cmd") or [])]
    # PortBindings as asked (a random host port is ""), Ports as bound (the port it got)
    bindings = _ports(config.get("ports") or [], "", "")
    bound = [p for e in details.get("endpoints") or [] for p in e.get("ports") or []]
    ports = _ports(bound or config.get("ports") or [], "0.0.0.0", "0")
    shaped = {
        "Id": details.get("id", ""),
        "Created": details.get("created", ""),
        "Path": command[0] if command else "",
        "Args": command[1:],
        "State": {
            "Status": state.get("status", ""),
            "Running": state.get("running", False),
            "Paused": state.get("paused", False),
            "Restarting": state.get("restarting", False),
            "OOMKilled": state.get("oom_killed", False),
            "Dead": state.get("status") == "dead",
            "Pid": state.get("pid", 0),
            "ExitCode": state.get("exit_code", 0),
            "Error": state.get("error", ""),
            "StartedAt": state.get("started_at", ""),
            "FinishedAt": state.get("finished_at", ""),
            **(
                {
                    "Health": {
                        "Status": health.get("status", "none"),
                        "FailingStreak": health.get("failing_streak", 0),
                    }
                }
                if health
                else {}
            ),
        },
        "Image": details.get("image_id", ""),
        "Name": "/" + str(details.get("name", "")),
        "RestartCount": details.get("restart_count", 0),
        "LogPath": details.get("log_path", ""),
        "Config": {
            "Hostname": config.get("hostname") or str(details.get("id", ""))[:12],
            "User": config.get("user", ""),
            "Tty": config.get("tty", False),
            "OpenStdin": config.get("open_stdin", False),
            "Env": config.get("env") or [],
            "Cmd": config.get("cmd"),
            "Entrypoint": config.get("entrypoint"),
            "Image": details.get("image", config.get("image", "")),
            "WorkingDir": config.get("workdir", ""),
            "Labels": config.get("labels") or {},
            "StopSignal": config.get("stop_signal", ""),
            "ExposedPorts": {key: {} for key in ports},
        },
        "HostConfig": {
            "Memory": resources.get("memory", 0),
            "MemorySwap": resources.get("memory_swap", 0),
            "NanoCpus": resources.get("nano_cpus", 0),
            "CpuShares": resources.get("cpu_shares", 0),
            "CpusetCpus": resources.get("cpuset_cpus", ""),
            "PidsLimit": resources.get("pids_limit", 0) or None,
            "CapAdd": config.get("cap_add") or None,
            "CapDrop": config.get("cap_drop") or None,
            "SecurityOpt": config.get("security_opt") or None,
            "ReadonlyRootfs": config.get("read_only", False),
            "Init": config.get("init", False),
            "AutoRemove": config.get("auto_remove", False),
            "RestartPolicy": {
                "Name": restart.get("name", "no"),
                "MaximumRetryCount": restart.get("maximum_retry_count", 0),
            },
            "NetworkMode": config.get("network", "default"),
            "PidMode": config.get("pid_mode", ""),
            "IpcMode": config.get("ipc_mode", ""),
            "PortBindings": bindings,
            "ExtraHosts": config.get("extra_hosts") or None,
            "Dns": config.get("dns") or [],
            "DnsSearch": config.get("dns_search") or [],
            "Sysctls": config.get("sysctls") or None,
            "Privileged": "ALL" in (config.get("cap_add") or [])
            and "seccomp=unconfined" in (config.get("security_opt") or []),
        },
        "Mounts": [
            {
                "Type": mount.get("type", ""),
                **({"Name": mount.get("source", "")} if mount.get("type") == "volume" else {}),
                "Source": mount.get("source", ""),
                "Destination": mount.get("target", ""),
                "Mode": "ro" if mount.get("read_only") else "",
                "RW": not mount.get("read_only", False),
                "Propagation": mount.get("propagation", ""),
            }
            for mount in config.get("mounts") or []
        ],
        "NetworkSettings": {
            "IPAddress": first.get("IPAddress", ""),
            "IPPrefixLen": first.get("IPPrefixLen", 0),
            "Gateway": first.get("Gateway", ""),
            "MacAddress": first.get("MacAddress", ""),
            "Ports": ports,
            "Networks": networks,
        },
    }
    return {**shaped, **details}


def docker_image(details: dict[str, Any]) -> dict[str, Any]:
    """`carte image inspect`'s document with Docker's keys beside this API's own (`.Id`,
    `.RepoTags`, `.Config.Cmd`, `.Config.Env`, `.RootFS.Layers`...), as `docker_container`."""
    digest = details.get("manifest_digest") or ""
    repositories = {tag.rpartition(":")[0] for tag in details.get("repo_tags") or []}
    shaped = {
        "Id": details.get("id", ""),
        "RepoTags": details.get("repo_tags") or [],
        "RepoDigests": [f"{name}@{digest}" for name in sorted(repositories)] if digest else [],
        "Created": details.get("created", ""),
        "Architecture": details.get("architecture", ""),
        "Os": details.get("os", ""),
        "Size": details.get("size", 0),
        "Config": {
            "Cmd": details.get("cmd"),
            "Entrypoint": details.get("entrypoint"),
            "Env": details.get("env") or [],
            "WorkingDir": details.get("working_dir", ""),
            "User": details.get("user", ""),
            "Labels": details.get("labels") or {},
            "StopSignal": details.get("stop_signal", ""),
            "ExposedPorts": {port: {} for port in details.get("exposed_ports") or []},
            "Volumes": {volume: {} for volume in details.get("volumes") or []},
        },
        "RootFS": {"Type": "layers", "Layers": details.get("layers") or []},
    }
    return {**shaped, **details}
