"""The parsers fed generated input: a Compose file, a Dockerfile, an image config or manifest
either parses or is refused with the parser's own error (one line naming the place), never
another exception and never a hang (each example has a deadline, see fuzz_settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_settings import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from carte.api.errors import InvalidArgument
from carte.build.dockerfile import DockerfileError, parse
from carte.image import oci
from carte.stack import ManifestError, load_manifest

COMPOSE_KEYS = [
    "services", "networks", "volumes", "secrets", "configs", "include", "name", "x-carte",
    "image", "build", "command", "entrypoint", "environment", "ports", "expose", "depends_on",
    "healthcheck", "restart", "labels", "user", "deploy", "replicas", "resources", "limits",
    "cpus", "memory", "extends", "file", "service", "profiles", "ulimits", "sysctls", "tmpfs",
    "network_mode", "stop_grace_period", "update_config", "monitor", "test", "interval",
    "condition", "target", "published", "mode", "driver", "ipam", "config", "subnet", "web",
    "db", "<<", "&a", "*a", "${X}", "${X:?boom}", "$$", "0", "",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(COMPOSE_KEYS),
    st.sampled_from(
        ["80:80", "1g", "10s", "-5s", "0.5", "busybox", "${A:-x}", "a=b", "on-failure"]
    ),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(COMPOSE_KEYS), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)
service_bodies = st.dictionaries(st.sampled_from(COMPOSE_KEYS), documents, max_size=6)
compose_shaped = st.builds(
    lambda services, rest: {"services": services, **rest},
    st.dictionaries(st.sampled_from(["web", "db", "a-b", ""]), service_bodies, max_size=3),
    st.dictionaries(st.sampled_from(COMPOSE_KEYS), documents, max_size=3),
)
yaml_fragments = st.lists(
    st.sampled_from(
        [
            "services:",
            "  web:",
            "    image: busybox",
            '    ports: ["80:80"]',
            "  - a",
            "- b",
            "x: &a {b: 1}",
            "y: *a",
            "<<: *a",
            "!!binary aGk=",
            "!reset",
            "!override",
            "? [a, b]",
            ": c",
            "%YAML 1.2",
            "---",
            "...",
            "\t",
            "'",
            '"\\x',
            "{",
            "[",
            "a: b: c",
            "#",
            "|",
            ">-",
            "  deploy: {replicas: -1}",
            "    command: ${X:?unset}",
            "version: '3'",
        ]
    ),
    max_size=12,
).map("\n".join)


def compose_text() -> st.SearchStrategy[str]:
    return st.one_of(
        compose_shaped.map(lambda d: json.dumps(d, default=str)),
        documents.map(lambda d: json.dumps(d, default=str)),
        yaml_fragments,
        st.text(max_size=200),
    )


@pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")  # valid YAML 1.2
@FUZZ
@given(text=compose_text())
def test_compose_any_yaml_is_a_manifest_or_a_manifest_error(text: str, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    project = tmp_path_factory.mktemp("compose")  # includes and extends resolve in here
    try:
        load_manifest(text, "compose.yaml", {}, project_dir=str(project))
    except ManifestError as error:
        assert str(error).startswith("compose.yaml:") or "compose" in str(error), str(error)


DOCKERFILE_WORDS = [
    "FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "LABEL", "CMD", "ENTRYPOINT", "WORKDIR", "USER",
    "EXPOSE", "VOLUME", "HEALTHCHECK", "ONBUILD", "SHELL", "STOPSIGNAL", "MAINTAINER", "from",
    "busybox", "AS", "base", "--from=base", "--chown=1:1", "--mount=type=cache,target=/x",
    "--network=none", "<<EOF", "<<-EOT", "EOF", "EOT", "\\", "`", "#", "# escape=`",
    "# syntax=docker/dockerfile:1", "[", "]", '["sh", "-c"]', '"', "=", "a=b", "$X", "${X:-y}",
    "NONE", "CMD true", "\t", "", "80/tcp",
]  # fmt: skip

dockerfile_lines = st.lists(
    st.one_of(
        st.lists(st.sampled_from(DOCKERFILE_WORDS), min_size=1, max_size=6).map(" ".join),
        st.text(max_size=30),
    ),
    max_size=15,
).map("\n".join)


@FUZZ
@given(text=st.one_of(dockerfile_lines, st.text(max_size=300)))
def test_dockerfile_parses_or_says_where(text: str) -> None:
    try:
        parsed = parse(text, "Dockerfile")
    except DockerfileError as error:
        assert str(error).startswith("Dockerfile"), str(error)
    else:
        assert parsed.instructions


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
OCI_KEYS = [
    "schemaVersion", "mediaType", "config", "layers", "manifests", "digest", "size",
    "platform", "architecture", "os", "variant", "annotations", "rootfs", "type", "diff_ids",
    "history", "created", "created_by", "empty_layer", "Env", "Cmd", "Entrypoint", "User",
    "WorkingDir", "ExposedPorts", "Volumes", "Labels", "Healthcheck", "Test", "Interval",
    "StopSignal", "Shell", "OnBuild", "urls",
]  # fmt: skip
oci_shaped = st.recursive(
    json_values,
    lambda inner: st.dictionaries(st.sampled_from(OCI_KEYS), inner, max_size=6),
    max_leaves=25,
)
oci_documents = st.one_of(
    oci_shaped.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=100),
)


@FUZZ
@given(data=oci_documents)
def test_image_documents_decode_or_are_invalid_images(data: bytes) -> None:
    for decode in (oci.decode_manifest, oci.decode_index, oci.decode_config, oci.sniff_media_type):
        try:
            decode(data, "fuzzed document")
        except InvalidArgument as error:
            assert "fuzzed document" in str(error), str(error)


def test_the_strategies_reach_valid_documents(tmp_path: Path) -> None:
    """The fuzzers are worth something only if accepted inputs are reachable at all: the
    smallest valid document of each parser goes through."""
    load_manifest(
        "services: {web: {image: busybox}}", "compose.yaml", {}, project_dir=str(tmp_path)
    )
    assert parse("FROM busybox\nRUN true\n").instructions[1].keyword == "RUN"
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    oci.decode_config(json.dumps(config).encode())


def test_a_lone_surrogate_escape_is_a_manifest_error(tmp_path: Path) -> None:
    """Found by the fuzzer: YAML's "\\ud800" escape decodes to a string that is not text, and
    msgspec raised UnicodeEncodeError (a traceback) instead of a line naming the key."""
    text = 'services:\n  web:\n    image: "\\ud800"\n  "\\udc80": {image: busybox}\n'
    with pytest.raises(ManifestError) as refused:
        load_manifest(text, "compose.yaml", {}, project_dir=str(tmp_path))
    assert "compose.yaml:3: services.web.image: holds a lone surrogate" in str(refused.value)
    assert "compose.yaml:1: services: holds a lone surrogate" in str(refused.value)
