"""How the client prints: aligned tables for people, JSON for scripts (`--format json`)."""

from __future__ import annotations

import json
import sys

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
        self.stream.write(json.dumps(value, indent=2, sort_keys=False) + "\n")

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Print rows under upper-case headers, columns padded to the widest cell."""
        cells = [[str(h).upper() for h in headers], *[[str(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for row in cells:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            self.stream.write("   ".join(padded).rstrip() + "\n")

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
    or this API's snake_case names), `{{.}}`, `{{json .A}}`, `{{index .A "key"}}`,
    `{{range .A}}...{{end}}` (`.` is each item; `{{range $k, $v := .A}}` names them),
    `{{if .A}}...{{else}}...{{end}}`, `{{lower .A}}`/`{{upper .A}}`. A missing field renders
    as <no value>, as Go does; anything else raises TemplateError."""
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
            truthy = bool(found) and found != _NO_VALUE
            out += _evaluate(node[2] if truthy else node[3], dot, names)
        else:
            variables, _, expression = node[1].rpartition(":=")
            items = _expression(expression.strip(), dot, names)
            pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items))
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
    if isinstance(found, dict | list):
        return json.dumps(found)
    if isinstance(found, bool):
        return "true" if found else "false"
    return "" if found is None else str(found)


def _expression(action: str, dot: Any, names: dict[str, Any]) -> Any:
    import shlex

    try:
        words = shlex.split(action)
    except ValueError as error:
        raise TemplateError(f"{{{{{action}}}}}: {error}") from None
    if not words:
        raise TemplateError("an empty {{}} in the template")
    function, arguments = words[0], [_field(w, dot, names) for w in words[1:]]
    if function == "json" and len(arguments) == 1:
        return json.dumps(arguments[0])
    if function in ("lower", "upper") and len(arguments) == 1:
        text = _show(arguments[0])
        return text.lower() if function == "lower" else text.upper()
    if function == "index" and len(arguments) >= 2:
        found = arguments[0]
        for key in words[2:]:
            if isinstance(found, dict):
                found = found.get(key, _NO_VALUE)
            elif isinstance(found, list) and key.isdigit() and int(key) < len(found):
                found = found[int(key)]
            else:
                return _NO_VALUE
        return found
    if len(words) == 1 and (function.startswith((".", "$"))):
        return _field(function, dot, names)
    raise TemplateError(f'{{{{{action}}}}}: "{function}" is not a field or a known function')


def _field(path: str, dot: Any, names: dict[str, Any]) -> Any:
    """`.A.B` from `dot`, `$v.A` from a range variable, a quoted word as itself."""
    if path.startswith("$"):
        name, _, rest = path.partition(".")
        if name not in names and name != "$":
            raise TemplateError(f'template variable "{name}" is not defined')
        current = names.get(name, dot)
        path = "." + rest if rest else "."
    elif path.startswith("."):
        current = dot
    else:
        return path
    for part in [p for p in path.split(".") if p]:
        if not isinstance(current, dict):
            return _NO_VALUE
        key = part if part in current else _snake(part)
        if key not in current:
            return _NO_VALUE
        current = current[key]
    return current


# --- Docker-shaped documents ----------------------------------------------------------------


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
    ports: dict[str, Any] = {}
    for port in config.get("ports") or []:
        key = f"{port['container_port']}/{port.get('protocol', 'tcp')}"
        ports.setdefault(key, []).append(
            {"HostIp": port.get("host_ip") or "0.0.0.0", "HostPort": str(port.get("host_port", 0))}
        )
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
            "Hostname": config.get("hostname", ""),
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
            "PortBindings": ports,
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
