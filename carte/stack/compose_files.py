"""Compose's ways of assembling one project from several documents: `include` (other files'
resources), `extends` (a service from this or another file), YAML's `!reset` and `!override`,
and `profiles`. They work on the plain data `parse._plain` makes, before decoding.

Merge rules are Compose's: mappings merge key by key (the extending side wins), sequences of
`environment`, `labels`, `extra_hosts`, `sysctls` merge by name, `volumes` and `tmpfs` by
target, `command`, `entrypoint` and `healthcheck.test` are replaced, other sequences are
appended without repeats. `!override` replaces instead of merging; `!reset` removes the key.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

T = TypeVar("T")

Path = tuple[str | int, ...]


class Reset:
    """A value tagged `!reset`: the key is removed (also from what it extends)."""


class Override:
    """A value tagged `!override`: replaces what it extends instead of merging with it."""

    def __init__(self, value: Any) -> None:
        self.value = value


RESET = Reset()

_REPLACED = frozenset(("command", "entrypoint", "test"))
_BY_NAME = frozenset(("environment", "labels", "extra_hosts", "sysctls", "args"))
_BY_TARGET = frozenset(("volumes", "tmpfs"))


def merge(base: Any, local: Any, key: str = "") -> Any:
    """`local` over `base` as Compose merges an extending service over its base."""
    if isinstance(local, Reset):
        return RESET
    if isinstance(local, Override):
        return local.value
    if isinstance(base, Reset | Override):
        base = None if isinstance(base, Reset) else base.value
    if isinstance(base, dict) and isinstance(local, dict):
        out = dict(base)
        for name, value in local.items():
            out[name] = merge(base[name], value, name) if name in base else value
        return out
    if key in _BY_NAME and isinstance(base, dict | list) and isinstance(local, dict | list):
        merged = {**_as_mapping(base), **_as_mapping(local)}
        return merged
    if isinstance(base, list) and isinstance(local, list) and key not in _REPLACED:
        if key in _BY_TARGET:
            targets = {_target(item) for item in local}
            return [item for item in base if _target(item) not in targets] + local
        return base + [item for item in local if item not in base]
    return local


def strip(value: Any) -> Any:
    """`value` without `Reset`/`Override` markers (reset keys removed)."""
    if isinstance(value, Override):
        return strip(value.value)
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [strip(v) for v in value if not isinstance(v, Reset)]
    return value


def _as_mapping(value: dict[str, Any] | list[Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for item in value:
        text = str(item)
        # extra_hosts' list form is "name:ip" or "name=ip"; the others "KEY=VALUE"
        sep = "=" if "=" in text else ":"
        name, found, rest = text.partition(sep)
        out[name] = rest if found else None
    return out


def _target(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("target")
    parts = str(item).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def active_services(services: dict[str, T], profiles: list[str]) -> dict[str, T]:
    """The services a run with `profiles` starts: those without profiles, those with one of
    `profiles` ("*" enables all)."""
    wanted = set(profiles)
    out = {}
    for name, body in services.items():
        own = getattr(body, "profiles", None)
        if not own or "*" in wanted or wanted.intersection(str(p) for p in own):
            out[name] = body
    return out


def rebase(document: dict[str, Any], directory: str) -> None:
    """Make the relative paths of another file of the project (included or extended from)
    absolute against that file's `directory`, as Compose resolves them: build contexts,
    bind-mount sources, env_file, the files of secrets and configs, and its own `include`
    and `extends.file` entries. Changes `document` in place."""
    for entry in _listed(document.get("include")):
        if isinstance(entry, dict):
            entry["path"] = [_absolute(p, directory) for p in _listed(entry.get("path"))]
            if isinstance(entry.get("project_directory"), str):
                entry["project_directory"] = _absolute(entry["project_directory"], directory)
    if isinstance(document.get("include"), list):
        document["include"] = [
            _absolute(item, directory) if isinstance(item, str) else item
            for item in document["include"]
        ]
    for section in ("secrets", "configs"):
        for decl in _values(document.get(section)):
            if isinstance(decl, dict) and isinstance(decl.get("file"), str):
                decl["file"] = _absolute(decl["file"], directory)
    for body in _values(document.get("services")):
        if isinstance(body, dict):
            _rebase_service(body, directory)


def _rebase_service(body: dict[str, Any], directory: str) -> None:
    build = body.get("build")
    if isinstance(build, str):
        body["build"] = _context(build, directory)
    elif isinstance(build, dict):
        build["context"] = _context(str(build.get("context") or "."), directory)
    extends = body.get("extends")
    if isinstance(extends, dict) and isinstance(extends.get("file"), str):
        extends["file"] = _absolute(extends["file"], directory)
    env_file = body.get("env_file")
    if isinstance(env_file, str):
        body["env_file"] = _absolute(env_file, directory)
    elif isinstance(env_file, list):
        body["env_file"] = [_absolute(p, directory) if isinstance(p, str) else p for p in env_file]
    volumes = body.get("volumes")
    if isinstance(volumes, list):
        body["volumes"] = [_bind_source(item, directory) for item in volumes]


def _bind_source(item: Any, directory: str) -> Any:
    if isinstance(item, dict):
        if item.get("type") == "bind" and isinstance(item.get("source"), str):
            item["source"] = _absolute(item["source"], directory)
        return item
    if isinstance(item, str) and item.startswith("."):
        source, sep, rest = item.partition(":")
        return f"{_absolute(source, directory)}{sep}{rest}"
    return item


def _context(context: str, directory: str) -> str:
    """A build context: a URL (git, http) stays as written, a path is made absolute."""
    return (
        context if "://" in context or context.startswith("git@") else _absolute(context, directory)
    )


def _absolute(path: Any, directory: str) -> Any:
    if not isinstance(path, str) or not path or path.startswith(("/", "~", "$")):
        return path
    return os.path.normpath(os.path.join(directory, path))


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _values(value: Any) -> list[Any]:
    return list(value.values()) if isinstance(value, dict) else []
