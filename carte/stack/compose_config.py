"""The project as `docker compose config` prints it: one normalized Compose file.

The file and what it includes or extends, interpolated and merged (`parse.load_project`), with
the long forms Compose prints: `build` as context (absolute) and dockerfile, `command` and
`entrypoint` as lists, `environment` as a mapping with `env_file`s read into it, `ports` and
`volumes` in their long form (bind sources absolute), `depends_on` with its condition,
`networks` as a mapping (`default` when none is named), the project `name`, and the top-level
networks, volumes, secrets and configs with the names the stack gives them. Services that
no enabled profile selects are left out.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from carte.stack.interpolate import parse_dotenv
from carte.stack.model import Service
from carte.stack.normalize import depends_on, mapping, ports_of, unpublished_ports
from carte.stack.parse import Source, load_project


def compose_config(
    text: str,
    file_name: str,
    env: dict[str, str],
    *,
    project_dir: str,
    name: str,
    profiles: list[str] | None = None,
) -> dict[str, Any]:
    """The normalized project (plain data, ready for YAML or JSON). Raises ManifestError, as
    `load_manifest` does, also for an env_file that cannot be read."""
    manifest, source, _warnings, plain = load_project(
        text, file_name, env, project_dir=project_dir, profiles=profiles
    )
    bodies = plain.get("services") or {}
    services = {
        key: _service(manifest.services[key], bodies[key], project_dir, source, key)
        for key in sorted(manifest.services)
    }
    out: dict[str, Any] = {"name": name, "services": services}
    networks = {n for body in services.values() for n in body.get("networks", {})}
    declared = dict(plain.get("networks") or {})
    for key in sorted(networks - set(declared)):
        declared[key] = None
    out["networks"] = {
        key: _resource(value, key, name, project_dir) for key, value in sorted(declared.items())
    }
    for section in ("volumes", "secrets", "configs"):
        entries = plain.get(section) or {}
        if entries:
            out[section] = {
                key: _resource(value, key, name, project_dir)
                for key, value in sorted(entries.items())
            }
    return out


def _service(
    service: Service, body: dict[str, Any], project_dir: str, source: Source, key: str
) -> dict[str, Any]:
    out = dict(body)
    if service.build is not None:
        given = body["build"]
        build = {"context": given} if isinstance(given, str) else dict(given)
        build["context"] = _absolute(str(build.get("context") or "."), project_dir)
        build.setdefault("dockerfile", "Dockerfile")
        out["build"] = build
    for word in ("command", "entrypoint"):
        if isinstance(body.get(word), str):
            out[word] = shlex.split(body[word])
    environment = _env_files(service, project_dir, source, key)
    environment.update(mapping(service.environment))
    out.pop("env_file", None)
    if environment:
        out["environment"] = dict(sorted(environment.items()))
    if service.labels:
        out["labels"] = dict(sorted(mapping(service.labels).items()))
    if service.ports:
        out["ports"] = _ports(service)
    if service.expose:
        out["expose"] = [str(item) for item in service.expose]
    if service.volumes:
        out["volumes"] = [_volume(item, project_dir) for item in body["volumes"]]
    if service.depends_on:
        out["depends_on"] = {
            name: {"condition": dep.condition, "required": dep.required, "restart": dep.restart}
            for name, dep in depends_on(service).items()
        }
    if not service.network_mode:
        listed = body.get("networks") or ["default"]
        out["networks"] = listed if isinstance(listed, dict) else dict.fromkeys(listed)
    return dict(sorted(out.items()))


def _ports(service: Service) -> list[dict[str, Any]]:
    listed = [*ports_of(service.ports), *unpublished_ports(service)]
    out = []
    for port in listed:
        entry: dict[str, Any] = {"mode": "ingress", "target": port.container_port}
        if port.host_ip:
            entry["host_ip"] = port.host_ip
        if port.host_port:
            entry["published"] = str(port.host_port)
        entry["protocol"] = port.protocol
        out.append(entry)
    return out


def _volume(item: Any, project_dir: str) -> dict[str, Any]:
    if isinstance(item, dict):
        out = dict(item)
        if out.get("type") == "bind" and out.get("source"):
            out["source"] = _absolute(str(out["source"]), project_dir)
        return out
    parts = str(item).split(":")
    if len(parts) == 1:
        return {"type": "volume", "target": parts[0]}
    source, target, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
    out = {"type": "volume", "source": source, "target": target}
    if source.startswith((".", "/", "~")):
        out = {"type": "bind", "source": _absolute(source, project_dir), "target": target}
        out["bind"] = {"create_host_path": True}
    if "ro" in mode.split(","):
        out["read_only"] = True
    return out


def _env_files(
    service: Service, project_dir: str, source: Source, key: str
) -> dict[str, str | None]:
    files = [service.env_file] if isinstance(service.env_file, str) else service.env_file
    out: dict[str, str | None] = {}
    for index, name in enumerate(files):
        path = _absolute(name, project_dir)
        try:
            with open(path, encoding="utf-8") as file:
                out.update(parse_dotenv(file.read()))
        except OSError as error:
            at = ("services", key, "env_file", index) if len(files) > 1 else ("services", key)
            raise source.error(
                at if len(files) > 1 else (*at, "env_file"),
                f'"{name}" cannot be read ({error.strerror}); check the path',
            ) from None
    return out


def _resource(value: Any, key: str, project: str, project_dir: str) -> dict[str, Any]:
    """A top-level network, volume, secret or config with its name (`PROJECT_KEY`; an
    external one is named by its key) and an absolute `file`."""
    out = dict(value) if isinstance(value, dict) else {}
    if not out.get("name"):
        out["name"] = key if out.get("external") else f"{project}_{key}"
    if isinstance(out.get("file"), str):
        out["file"] = _absolute(out["file"], project_dir)
    return dict(sorted(out.items()))


def _absolute(path: str, project_dir: str) -> str:
    if path.startswith("~"):
        return os.path.expanduser(path)
    if "://" in path:
        return path
    return os.path.normpath(os.path.join(project_dir, path))
