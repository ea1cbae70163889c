"""The Compose manifest without a daemon, for the keys and behaviour public Compose files rely
on: include and extends (with cycles refused), YAML tags, profiles, bare environment names,
restart values, and bad input reported all at once, each problem at its own key and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_stacks_manifest import replica_of

from carte.stack import Manifest, ManifestError, load_manifest, normalize
from carte.stack.parse import MAX_ERRORS


def _load(
    directory: Path, text: str, env: dict[str, str] | None = None, profiles: list[str] | None = None
) -> Manifest:
    (directory / "compose.yaml").write_text(text)
    manifest, _source, _warnings = load_manifest(
        text, "compose.yaml", env or {}, project_dir=str(directory), profiles=profiles
    )
    return manifest


def _error(directory: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ManifestError) as caught:
        _load(directory, text, env)
    return str(caught.value)


def test_include_and_extends_from_files(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "services:\n  common:\n    image: busybox\n    environment: [A=1, B=2]\n"
        "    ports: ['8080:80']\n    labels: {tier: base}\n"
    )
    (tmp_path / "db.yaml").write_text(
        "services:\n  db:\n    image: busybox\nvolumes:\n  data: {}\n"
    )
    manifest = _load(
        tmp_path,
        "include: [db.yaml]\nservices:\n  web:\n    extends: {file: base.yaml, service: common}\n"
        "    environment: [B=3]\n    labels: {app: web}\n"
        "  worker:\n    extends: web\n    ports: !reset []\n",
    )
    services = manifest.services
    assert set(services) == {"web", "worker", "db"}
    assert normalize.mapping(services["web"].environment) == {"A": "1", "B": "3"}
    assert normalize.mapping(services["web"].labels) == {"tier": "base", "app": "web"}
    assert services["web"].ports == ["8080:80"] and services["worker"].ports == []
    assert "data" in manifest.volumes


def test_extends_and_include_cycles_are_refused(tmp_path: Path) -> None:
    message = _error(
        tmp_path, "services:\n  a:\n    extends: b\n    image: x\n  b:\n    extends: a\n"
    )
    assert message.startswith("compose.yaml:") and "extends has a cycle" in message
    (tmp_path / "other.yaml").write_text("include: [compose.yaml]\nservices: {o: {image: x}}\n")
    message = _error(tmp_path, "include: [other.yaml]\nservices:\n  a: {image: x}\n")
    assert "include has a cycle (compose.yaml -> other.yaml -> compose.yaml)" in message
    assert 'file "gone.yaml" is missing' in _error(
        tmp_path, "include: [gone.yaml]\nservices:\n  a: {image: x}\n"
    )


def test_yaml_tags(tmp_path: Path) -> None:
    manifest = _load(
        tmp_path,
        "x-base: &base\n  image: busybox\n  ports: ['80:80']\n  command: [a, b]\n"
        "services:\n  web:\n    <<: *base\n    ports: !override ['81:80']\n"
        "    command: !reset null\n    labels: {n: !!str 123, o: !!int '7'}\n",
    )
    web = manifest.services["web"]
    assert web.ports == ["81:80"] and web.command is None
    assert web.labels == {"n": "123", "o": 7}
    message = _error(tmp_path, "services:\n  web:\n    image: busybox\n    labels: !mine {a: b}\n")
    assert message == (
        "compose.yaml:4: services.web.labels: unknown YAML tag !mine; use !reset, "
        "!override or a core tag such as !!str"
    )


def test_profiles_and_bare_environment(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: busybox\n    environment: [PASSTHRU, UNSET, FIXED=1]\n"
        "  tools:\n    image: busybox\n    profiles: [debug]\n"
    )
    manifest = _load(tmp_path, text, {"PASSTHRU": "from-client"})
    assert set(manifest.services) == {"web"}
    config = replica_of(manifest, "web", stack="s", project_dir=str(tmp_path))
    assert "PASSTHRU=from-client" in config.env and "FIXED=1" in config.env
    assert not any(item.startswith("UNSET") for item in config.env)
    assert set(_load(tmp_path, text, profiles=["debug"]).services) == {"web", "tools"}
    assert set(_load(tmp_path, text, {"COMPOSE_PROFILES": "debug"}).services) == {"web", "tools"}


def test_restart_values(tmp_path: Path) -> None:
    for value, expected in (
        ('"no"', ("none", 0)),
        ("always", ("any", 0)),
        ("unless-stopped", ("any", 0)),
        ("on-failure", ("on-failure", 0)),
        ("on-failure:3", ("on-failure", 3)),
    ):
        manifest = _load(tmp_path, f"services:\n  a:\n    image: x\n    restart: {value}\n")
        assert normalize.restart_policy(manifest.services["a"]) == expected
    message = _error(tmp_path, "services:\n  a:\n    image: x\n    restart: sometimes\n")
    assert message.startswith('compose.yaml:4: services.a.restart: "sometimes" is not a restart')


def test_every_problem_reported_at_its_own_key_and_line(tmp_path: Path) -> None:
    text = """\
services:
  web:
    image: busybox
    deploy:
      replcas: 2
    ports: ["80:80"]
    expose: ["80", "abc"]
    sysctls: {kernel.panic: 1}
    platform: linux/s390x
    runtime: runc
    privileged: true
  db:
    image: busybox
    depends_on:
      web: {}
      cache: {condition: sometime}
  cache: {image: busybox}
networks:
  front:
    ipam: {config: [{subnet: 10.1.0.0/24}]}
  back:
    ipam: {config: [{subnet: 10.2.0.0/33}]}
"""
    lines = _error(tmp_path, text).splitlines()
    assert lines[0] == (
        'compose.yaml:5: services.web.deploy.replcas: unknown key "replcas"; did you mean '
        '`replicas`? remove it or prefix it with "x-"'
    )
    assert lines[1].startswith("compose.yaml:7: services.web.expose[1]: ")
    assert lines[2].startswith("compose.yaml:8: services.web.sysctls.kernel.panic: ")
    assert "not namespaced" in lines[2]
    assert lines[3].startswith('compose.yaml:9: services.web.platform: "linux/s390x" is not')
    assert lines[4].startswith('compose.yaml:10: services.web.runtime: runtime "runc" is not')
    assert lines[5].startswith('compose.yaml:11: services.web.privileged: "privileged" is not')
    assert lines[6].startswith("compose.yaml:16: services.db.depends_on.cache.condition:")
    assert lines[7].startswith("compose.yaml:22: networks.back.ipam.config[0]:")
    assert len(lines) == 8


def test_errors_stop_at_the_limit(tmp_path: Path) -> None:
    body = "".join(f"  s{i}:\n    image: x\n    restrat: always\n" for i in range(30))
    lines = _error(tmp_path, "services:\n" + body).splitlines()
    assert len(lines) == MAX_ERRORS + 1 and lines[-1] == "... and 10 more problems"
    assert "did you mean `restart`?" in lines[0]


def test_refusals_say_why(tmp_path: Path) -> None:
    def first(extra: str) -> str:
        return _error(tmp_path, f"services:\n  a:\n    image: x\n{extra}").splitlines()[0]

    assert "is not this host's platform" in first("    platform: linux/arm64/v8\n")
    assert "Carte's own OCI runtime" in first("    runtime: nvidia\n")
    assert "cannot share one container name" in first(
        "    container_name: one\n    deploy: {replicas: 2}\n"
    )
    assert 'service "other" is not in this file' in first("    ipc: service:other\n")
    assert "give b ipc: shareable" in first("    ipc: service:b\n  b: {image: x}\n")
    assert '"other" is not an IPC mode' in first("    ipc: other\n")
    assert "would change the host's network" in first(
        "    network_mode: host\n    sysctls: [net.core.somaxconn=1024]\n"
    )
    assert 'secret "nope" is not declared' in first("    secrets: [nope]\n")
    assert "IPv6 networks are not available" in _error(
        tmp_path, "services:\n  a: {image: x}\nnetworks:\n  n: {enable_ipv6: true}\n"
    )
    accepted = (
        "services:\n  a: {image: x}\nnetworks:\n  n: {enable_ipv6: false, attachable: true}\n"
    )
    assert _load(tmp_path, accepted, None).networks["n"] is not None
    assert "needs exactly one of file, environment, content" in _error(
        tmp_path, "services:\n  a: {image: x}\nsecrets:\n  s: {}\n"
    )


def test_docs_table_names_every_key() -> None:
    """docs/compose.md says, for every service key Carte reads or refuses, what it does."""
    import msgspec

    from carte.stack.model import REFUSED_SERVICE_KEYS, Service

    table = (Path(__file__).parents[3] / "docs" / "compose.md").read_text()
    read = [f.encode_name for f in msgspec.inspect.type_info(Service).fields]
    for key in [*read, *REFUSED_SERVICE_KEYS, "extends"]:
        if key != "x-carte":
            assert f"`{key}`" in table, key


def test_a_problem_is_placed_at_its_own_entry_not_a_sibling(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: busybox\n    depends_on:\n      a: {}\n"
        "      b: {condition: later}\n  a: {image: x}\n  b: {image: x}\n"
        "networks:\n  front:\n    ipam: {config: [{subnet: 10.1.0.0/24}]}\n"
        "  back:\n    ipam:\n      config: oops\n"
    )
    lines = _error(tmp_path, text).splitlines()
    assert lines[0].startswith("compose.yaml:6: services.web.depends_on.b.condition: ")
    assert lines[1].startswith("compose.yaml:14: networks.back.ipam.config: Expected `array`")
