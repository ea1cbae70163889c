"""`/v1/openapi.json`: the API described from the `carte.api` Structs themselves.

Schemas come from `msgspec.json.schema_components`, so the document cannot drift from the
types the daemon encodes. Commands are every loaded public `Command` subclass (plugins included),
each reachable at ``POST /v1/commands/<Name>``.
"""

import re
from typing import Any

import msgspec

from carte import __version__
from carte.api.events import Command, Event, Fact, event_name
from carte.api.system import ErrorBody, Info, Version

_REF = "#/components/schemas/{name}"
_PLACEHOLDER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """A served route as the web framework knows it: ``/v1/containers/<ref>``."""

    path: str
    methods: list[str]
    summary: str


def _subclasses(base: type[Event]) -> list[type[Event]]:
    found: list[type[Event]] = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def command_types() -> dict[str, type[Command[Any]]]:
    """Every public Command class loaded in this process, by name (built-ins and plugins);
    the ones only handlers send each other (``public = False``) are left out."""
    commands = [cls for cls in _subclasses(Command) if issubclass(cls, Command)]
    return {event_name(cls): cls for cls in commands if cls.public}


def fact_types() -> list[type[Fact]]:
    """Every Fact class loaded in this process."""
    return [cls for cls in _subclasses(Fact) if issubclass(cls, Fact)]


def _json(ref: str, media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": {"$ref": _REF.format(name=ref)}}}}


def _error_responses() -> dict[str, Any]:
    return {
        "default": {"description": "an error", **_json("ErrorBody")},
    }


def openapi_document(routes: list[Route] = []) -> dict[str, Any]:  # noqa: B006 (read only)
    """Build the OpenAPI 3.1 document; cheap enough to build per request.

    The system routes and commands are described from their Structs; any other served route
    in `routes` (added by other handlers' route modules) is listed with its summary.
    """
    commands = command_types()
    facts = fact_types()
    types: list[Any] = [Version, Info, ErrorBody, *commands.values(), *facts]
    (_, components) = msgspec.json.schema_components(types, ref_template=_REF)
    paths: dict[str, Any] = {
        "/_ping": {
            "get": {
                "summary": "liveness: answers OK",
                "responses": {"200": {"description": "OK", "content": {"text/plain": {}}}},
            }
        },
        "/v1/version": {
            "get": {
                "summary": "daemon and API version",
                "responses": {"200": {"description": "version", **_json("Version")}},
            }
        },
        "/v1/info": {
            "get": {
                "summary": "kernel, cgroup layout, storage roots, handlers",
                "responses": {"200": {"description": "info", **_json("Info")}},
            }
        },
        "/v1/events": {
            "get": {
                "summary": "NDJSON stream of facts (journal since `since`, then live)",
                "parameters": [
                    {
                        "name": "type",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "event name, topic or topic prefix; repeatable",
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "number"},
                        "description": "Unix time; replay the journal from then",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "one fact per line",
                        "content": {
                            "application/x-ndjson": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": _REF.format(name=event_name(f))} for f in facts
                                    ]
                                }
                            }
                        },
                    },
                    **_error_responses(),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "this document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    _add_served_routes(paths, routes)
    for name in sorted(commands):
        paths[f"/v1/commands/{name}"] = {
            "post": {
                "summary": (commands[name].__doc__ or name).strip().splitlines()[0],
                "requestBody": {"required": False, **_json(name)},
                "responses": {
                    "200": {"description": '{"result": ...}'},
                    **_error_responses(),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Carte API", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }


def _add_served_routes(paths: dict[str, Any], routes: list[Route]) -> None:
    for route in routes:
        if route.path.startswith("/v1/commands/"):
            continue  # described per command below
        path = _PLACEHOLDER.sub(r"{\1}", route.path)
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PLACEHOLDER.findall(route.path)
        ]
        for method in route.methods:
            operations = paths.setdefault(path, {})
            if method.lower() in operations:
                continue
            operation: dict[str, Any] = {"summary": route.summary}
            if parameters:
                operation["parameters"] = parameters
            operation["responses"] = {"200": {"description": "OK"}, **_error_responses()}
            operations[method.lower()] = operation
