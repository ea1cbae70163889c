"""Hostile Compose files (issue 11, item 3): alias bombs, recursive aliases and deep nesting are
refused at once with one line naming the file and line, never a `RecursionError` or a stall;
the same bounds hold for carte.yaml, and no command body can make msgspec recurse."""

from __future__ import annotations

import time

import msgspec
import pytest

from carte.api.containers import ExecOptions
from carte.api.events import Command
from carte.api.images import BuildRequest
from carte.build import ContextEntry
from carte.engine.config import ConfigError, parse_config
from carte.image import oci
from carte.image.archive import DockerManifestEntry
from carte.stack import ManifestError, load_manifest


def alias_bomb(levels: int) -> str:
    """The "billion laughs": each level is a list of nine aliases of the level below."""
    lines = ['x-l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"x-l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    lines += ["services:", "  web:", "    image: busybox", f"    command: *l{levels - 1}"]
    return "\n".join(lines) + "\n"


def deep(levels: int, opening: str, closing: str) -> str:
    return (
        "services:\n  web:\n    image: busybox\n"
        f"    labels: {{deep: {opening * levels}{closing * levels}}}\n"
    )


def refused(text: str) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        load_manifest(text, "compose.yaml", {})
    return str(caught.value), time.monotonic() - started


@pytest.mark.parametrize("levels", [6, 10])
def test_alias_bombs_are_refused_in_under_a_second(levels: int) -> None:
    message, took = refused(alias_bomb(levels))
    assert took < 1.0, f"{levels}-level alias bomb took {took:.2f}s"
    assert message.startswith("compose.yaml:"), message
    assert "aliases" in message and "\n" not in message, message


@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_one_line_naming_the_file(opening: str, closing: str) -> None:
    message, took = refused(deep(10_000, opening, closing))
    assert message.startswith("compose.yaml:4: "), message
    assert "nest" in message and "\n" not in message, message
    assert took < 1.0, f"took {took:.2f}s"


def test_a_recursive_alias_is_refused() -> None:
    text = "services:\n  web:\n    image: busybox\n    labels: &me {a: *me}\n"
    message, _took = refused(text)
    assert message.startswith("compose.yaml:4: "), message
    assert "refers to itself" in message, message


def test_ordinary_anchors_and_merge_keys_still_work() -> None:
    text = "x-common: &common\n  image: busybox\n  environment: {A: '1'}\nservices:\n" + "".join(
        f"  s{i}:\n    <<: *common\n    command: [sleep, '{i}']\n" for i in range(50)
    )
    manifest, _source, _warnings = load_manifest(text, "compose.yaml", {})
    assert len(manifest.services) == 50
    assert manifest.services["s7"].image == "busybox"


def test_carte_yaml_has_the_same_bounds() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        parse_config(alias_bomb(10).replace("services:", "x-services:"), "carte.yaml")
    assert time.monotonic() - started < 1.0
    assert str(caught.value).startswith("carte.yaml:"), caught.value
    with pytest.raises(ConfigError) as caught:
        parse_config("daemon: " + "[" * 10_000 + "]" * 10_000 + "\n", "carte.yaml")
    assert str(caught.value).startswith("carte.yaml:1: "), caught.value
    assert "nest" in str(caught.value)


def _commands() -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []
    pending: list[type] = [Command]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if issubclass(sub, msgspec.Struct):
                found.append(sub)
    return found


def test_no_command_body_can_make_the_json_decoder_recurse() -> None:
    """Every command type and every other body or image document decoded from outside (exec
    options, build requests and contexts, manifests, indexes, image configs, docker-archive
    manifests), every field given 10 000 nested arrays: a validation error, never a
    RecursionError (msgspec recurses only into untyped fields)."""
    nested = b"[" * 10_000 + b"]" * 10_000
    commands = _commands()
    assert len(commands) > 20
    for whole in (list[ContextEntry], list[DockerManifestEntry]):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(nested, type=whole)
    others = [ExecOptions, BuildRequest, oci.Manifest, oci.Index, oci.ImageConfig]
    for cls in [*commands, *others, DockerManifestEntry]:
        for field in msgspec.structs.fields(cls):
            body = b'{"' + field.encode_name.encode() + b'":' + nested + b"}"
            try:
                msgspec.json.decode(body, type=cls)
            except msgspec.ValidationError:
                pass
            except RecursionError:
                pytest.fail(f"{cls.__name__}.{field.name} recurses on nested JSON")


def test_a_swarm_stacks_overlay_driver_is_taken_and_others_are_named() -> None:
    """Swarm stack files say ``driver: overlay``: every network of a Carte cluster spans the
    nodes that use it, so it is taken; a driver Carte has not is refused by file and line."""
    base = "services:\n  web:\n    image: busybox\n    networks: [front]\nnetworks:\n  front:\n"
    manifest, _source, _warnings = load_manifest(base + "    driver: overlay\n", "c.yaml", {})
    assert manifest.networks["front"] is not None
    message, _took = refused(base + "    driver: macvlan\n")
    assert message == (
        'compose.yaml:7: networks.front.driver: driver "macvlan" is not available; '
        "use bridge or overlay"
    ), message
