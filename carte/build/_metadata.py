"""The build's per-stage state and the instructions that change only the image config
(ENV, ARG, LABEL, WORKDIR, USER, CMD, ENTRYPOINT, SHELL, EXPOSE, VOLUME, STOPSIGNAL,
HEALTHCHECK, ONBUILD, MAINTAINER). Each returns the text its cache key uses; errors are
`DockerfileError`s naming the file and line.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

from carte.build._stages import arg_definitions
from carte.build._words import expand_word, key_values, split_words
from carte.build.dockerfile import DockerfileError, Instruction, parse_instruction
from carte.image import oci
from carte.image.layers import LayerBlob

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class ArgScope:
    """What ARG lines resolve against: --build-arg values and the global (pre-FROM) ARGs."""

    build_args: dict[str, str]
    global_args: dict[str, str]
    escape: str


@dataclass
class StageState:
    """A stage being built: its layers, container config, history and cache key."""

    key: str
    layers: list[LayerBlob]
    config: dict[str, object]
    history: list[oci.History]
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False

    def words_env(self) -> dict[str, str]:
        """What `$VAR` expands to in instructions: the stage's ARGs, overridden by its ENV."""
        return {**self.args, **self.env_map()}

    def env_map(self) -> dict[str, str]:
        pairs = [item.partition("=") for item in self.env_list()]
        return {key: value for key, _, value in pairs}

    def env_list(self) -> list[str]:
        value = self.config.get("Env")
        return list(value) if isinstance(value, (list, tuple)) else []


def apply_metadata(instruction: Instruction, state: StageState, scope: ArgScope) -> str:
    """Apply ENV, ARG, LABEL, ... to the stage; return the text the cache key uses."""
    keyword = instruction.keyword
    words_env = state.words_env()
    config = state.config
    if keyword == "ENV":
        env = state.env_map()
        pairs = key_values(instruction.text, words_env, scope.escape)
        for key, value in pairs:
            env[key] = value
        config["Env"] = [f"{k}={v}" for k, v in env.items()]
        return "ENV " + json.dumps(pairs)
    if keyword == "ARG":
        definitions = arg_definitions(instruction, words_env, scope.escape)
        for name, default in definitions:
            if name in scope.build_args:
                state.args[name] = scope.build_args[name]
            elif default is not None:
                state.args[name] = default
            elif name in scope.global_args:
                state.args[name] = scope.global_args[name]
        return "ARG " + json.dumps({n: state.args.get(n) for n, _ in definitions})
    if keyword == "LABEL":
        labels = dict(mapping(config.get("Labels")))
        labels.update(key_values(instruction.text, words_env, scope.escape, legacy=True))
        config["Labels"] = labels
        return "LABEL " + json.dumps(labels, sort_keys=True)
    if keyword == "WORKDIR":
        path = expand_word(instruction.text, words_env, scope.escape)
        current = str(config.get("WorkingDir") or "/")
        config["WorkingDir"] = join_path(current, path)
        return f"WORKDIR {config['WorkingDir']}"
    if keyword == "USER":
        config["User"] = expand_word(instruction.text, words_env, scope.escape)
        return f"USER {config['User']}"
    if keyword in ("CMD", "ENTRYPOINT"):
        command = command_of(instruction, state)
        if keyword == "CMD":
            config["Cmd"], state.cmd_set = command, True
        else:
            config["Entrypoint"] = command
            if not state.cmd_set:
                config.pop("Cmd", None)
        return f"{keyword} {json.dumps(command)}"
    if keyword == "SHELL":
        if instruction.exec_form is None or not instruction.exec_form:
            raise instruction.error('SHELL needs the JSON form, e.g. SHELL ["/bin/sh", "-c"]')
        config["Shell"] = list(instruction.exec_form)
        return f"SHELL {json.dumps(config['Shell'])}"
    if keyword == "EXPOSE":
        ports = dict(mapping(config.get("ExposedPorts")))
        for port in split_words(instruction.text, words_env, scope.escape):
            number, _, protocol = port.partition("/")
            first, dash, last = number.partition("-")
            if not first.isdigit() or (dash and not last.isdigit()):
                raise instruction.error(f'"{port}" is not a port; use e.g. 8080 or 53/udp')
            for port_number in range(int(first), int(last if dash else first) + 1):
                ports[f"{port_number}/{(protocol or 'tcp').lower()}"] = {}
        config["ExposedPorts"] = ports
        return "EXPOSE " + " ".join(sorted(ports))
    if keyword == "VOLUME":
        volumes = dict(mapping(config.get("Volumes")))
        paths = instruction.exec_form or tuple(
            split_words(instruction.text, words_env, scope.escape)
        )
        for path in paths:
            volumes[path] = {}
        config["Volumes"] = volumes
        return "VOLUME " + " ".join(sorted(volumes))
    if keyword == "STOPSIGNAL":
        config["StopSignal"] = expand_word(instruction.text, words_env, scope.escape)
        return f"STOPSIGNAL {config['StopSignal']}"
    if keyword == "HEALTHCHECK":
        config["Healthcheck"] = _healthcheck(instruction)
        return "HEALTHCHECK " + json.dumps(config["Healthcheck"], sort_keys=True)
    if keyword == "ONBUILD":
        trigger = parse_instruction(instruction.text, line=instruction.line, file=instruction.file)
        if trigger.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise instruction.error(f"{trigger.keyword} is not allowed as an ONBUILD trigger")
        config["OnBuild"] = [*sequence(config.get("OnBuild")), instruction.text]
        return f"ONBUILD {instruction.text}"
    if keyword == "MAINTAINER":
        state.config["__author"] = instruction.text
        return f"MAINTAINER {instruction.text}"
    raise instruction.error("is not supported here")


def command_of(instruction: Instruction, state: StageState) -> list[str]:
    if instruction.exec_form is not None:
        return list(instruction.exec_form)
    shell = list(sequence(state.config.get("Shell"))) or list(DEFAULT_SHELL)
    return [*shell, instruction.text]


def _healthcheck(instruction: Instruction) -> dict[str, object]:
    text = instruction.text
    if text.upper() == "NONE":
        return {"Test": ["NONE"]}
    keyword, _, rest = text.partition(" ")
    if keyword.upper() != "CMD":
        raise instruction.error('expected "HEALTHCHECK [OPTIONS] CMD command" or NONE')
    trigger = parse_instruction("CMD " + rest, line=instruction.line, file=instruction.file)
    if trigger.exec_form is not None:
        test = ["CMD", *trigger.exec_form]
    else:
        test = ["CMD-SHELL", trigger.text]
    check: dict[str, object] = {"Test": test}
    names = {
        "interval": "Interval",
        "timeout": "Timeout",
        "start-period": "StartPeriod",
        "start-interval": "StartInterval",
    }
    for flag, value in instruction.flags.items():
        if flag == "retries":
            if not value.isdigit():
                raise instruction.error(f'--retries "{value}" is not a number')
            check["Retries"] = int(value)
        elif flag in names and flag != "start-interval":
            check[names[flag]] = _duration_ns(value, instruction)
    return check


def join_path(base: str, path: str) -> str:
    joined = posixpath.normpath(posixpath.join(base or "/", path))
    if path.endswith("/") and joined != "/":
        joined += "/"
    return joined


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def mapping(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


def sequence(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def _duration_ns(text: str, instruction: Instruction) -> int:
    units = {
        "ns": 1,
        "us": 1_000,
        "ms": 1_000_000,
        "s": 1_000_000_000,
        "m": 60_000_000_000,
        "h": 3_600_000_000_000,
    }
    for suffix in ("ns", "us", "ms", "s", "m", "h"):
        number = text.removesuffix(suffix)
        if number != text:
            try:
                return int(float(number) * units[suffix])
            except ValueError:
                break
    raise DockerfileError(
        f'{instruction.file}:{instruction.line}: HEALTHCHECK: duration "{text}" is invalid; '
        "use e.g. 30s or 1m30s"
    )
