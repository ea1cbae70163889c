"""The Compose manifest without a daemon: interpolation and .env as Compose does them, the
keys Carte reads, and bad input rejected with file, line and key."""

from __future__ import annotations

import pytest
from support import REPO

from carte.api.containers import ContainerConfig
from carte.stack import (
    InterpolationError,
    Manifest,
    ManifestError,
    interpolate,
    load_manifest,
    normalize,
    parse_dotenv,
    replica_config,
    template,
)

FULL = """\
name: shop
x-defaults: &defaults
  restart: always
services:
  web:
    <<: *defaults
    image: "busybox:${TAG:-latest}"
    command: httpd -f -p 80
    environment:
      MODE: ${MODE?set MODE}
      PRICE: "$$5"
    ports: ["8080:80", "127.0.0.1:9000-9001:9000-9001/udp", "3000"]
    expose: [7000]
    labels: [tier=front]
    depends_on:
      db: {condition: service_healthy}
    healthcheck:
      test: wget -q -O- localhost
      interval: 1m30s
      timeout: 500ms
    deploy:
      replicas: 3
      resources: {limits: {cpus: "0.5", memory: 64m, pids: 50}}
      update_config: {parallelism: 2, delay: 2s, order: start-first, monitor: 10s,
                      failure_action: pause, max_failure_ratio: 0.25}
    x-carte:
      readiness: {httpGet: {path: /ready, port: 80}}
      autoscale: {min: 2, max: 6, target_cpu_percent: 50, scale_down_stabilization: 1m}
      policies: [{from: [db], ports: [80]}]
    x-notes: anything
  db:
    image: busybox
    volumes: ["data:/var/lib/db", "./conf:/etc/db:ro"]
volumes:
  data: {}
"""


def test_full_manifest_reads_every_key_with_defaults() -> None:
    manifest, _source, warnings = load_manifest(FULL, "compose.yaml", {"MODE": "prod"})
    assert warnings == []
    web = manifest.services["web"]
    assert web.image == "busybox:latest"
    assert web.restart == "always"
    assert normalize.mapping(web.environment) == {"MODE": "prod", "PRICE": "$5"}
    ports = normalize.ports(web)
    assert [(p.host_port, p.container_port, p.protocol, p.host_ip) for p in ports] == [
        (8080, 80, "tcp", ""),
        (9000, 9000, "udp", "127.0.0.1"),
        (9001, 9001, "udp", "127.0.0.1"),
    ]
    assert normalize.container_ports(web) == [80, 3000, 7000, 9000, 9001]
    assert normalize.depends_on(web)["db"].condition == "service_healthy"
    update = web.deploy.update_config
    assert (update.parallelism, update.order, update.failure_action) == (2, "start-first", "pause")
    probe = web.x_carte.readiness
    assert probe is not None and probe.httpGet is not None and probe.httpGet.path == "/ready"
    # Kubernetes' defaults
    assert (probe.initialDelaySeconds, probe.periodSeconds, probe.timeoutSeconds) == (0, 10, 1)
    assert (probe.successThreshold, probe.failureThreshold) == (1, 3)
    scale = web.x_carte.autoscale
    assert scale is not None and (scale.min, scale.max, scale.target_cpu_percent) == (2, 6, 50)
    assert normalize.seconds(scale.scale_down_stabilization) == 60


def replica_of(
    manifest: Manifest,
    name: str,
    *,
    stack: str = "shop",
    replica: int = 1,
    revision: int = 1,
    project_dir: str = "/srv/shop",
) -> ContainerConfig:
    """The container config of one replica of the service `name` (no env files)."""
    return replica_config(
        stack=stack,
        name=name,
        service=manifest.services[name],
        replica=replica,
        revision=revision,
        project_dir=project_dir,
        env_files={},
    )


def test_replica_config_carries_labels_limits_and_healthcheck() -> None:
    manifest, _source, _warnings = load_manifest(FULL, "compose.yaml", {"MODE": "prod"})
    config = replica_of(manifest, "web", replica=2, revision=5)
    assert config.name.startswith("shop_web_2-")
    assert config.cmd == ["httpd", "-f", "-p", "80"]
    assert config.labels["com.carte.stack"] == "shop"
    assert config.labels["com.carte.revision"] == "5" and config.labels["tier"] == "front"
    assert config.resources.nano_cpus == 500_000_000
    assert config.resources.memory == 64 * 1024 * 1024 and config.resources.pids_limit == 50
    assert config.healthcheck is not None
    assert config.healthcheck.test == ["CMD-SHELL", "wget -q -O- localhost"]
    assert config.healthcheck.interval == 90 and config.healthcheck.timeout == 0.5
    assert config.network == "shop_default" and "tasks.web" in config.network_aliases
    db = replica_of(manifest, "db")
    mounts = [(m.type, m.source, m.target, m.read_only) for m in db.mounts]
    assert mounts == [
        ("volume", "shop_data", "/var/lib/db", False),
        ("bind", "/srv/shop/conf", "/etc/db", True),
    ]


def test_replica_count_and_limits_do_not_change_the_template() -> None:
    manifest, _s, _w = load_manifest(FULL, "c.yaml", {"MODE": "prod"})
    other, _s, _w = load_manifest(
        FULL.replace("replicas: 3", "replicas: 5").replace("pids: 50", "pids: 60"),
        "c.yaml",
        {"MODE": "prod"},
    )
    changed, _s, _w = load_manifest(FULL, "c.yaml", {"MODE": "prod", "TAG": "2"})
    assert template(manifest.services["web"]) == template(other.services["web"])
    assert template(manifest.services["web"]) != template(changed.services["web"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "1"),
        ("$A-x", "1-x"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-${A}}", "1"),
        ("${A:+yes}", "yes"),
        ("${UNSET+yes}", ""),
        ("$$A", "$A"),
        ("a$", "a$"),
    ],
)
def test_interpolation_as_compose(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "1", "EMPTY": ""}) == expected


def test_interpolation_errors() -> None:
    with pytest.raises(InterpolationError, match="required variable X: give X"):
        interpolate("${X?give X}", {})
    with pytest.raises(InterpolationError, match="unclosed"):
        interpolate("${X", {})


def test_dotenv_as_compose() -> None:
    env = parse_dotenv(
        "# comment\nA=1\nexport B='lit $A'\nC=\"two\\nlines\"\nD=${A}x # trailing\nbad line\n"
    )
    assert env == {"A": "1", "B": "lit $A", "C": "two\nlines", "D": "1x"}


def test_unset_variable_is_empty_with_a_warning() -> None:
    _m, _s, warnings = load_manifest("services:\n  a:\n    image: ${IMG}busybox\n", "f.yaml", {})
    assert warnings == ['variable "IMG" is not set; using ""']


def _error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(text, "stack.yaml", env or {})
    return str(caught.value)


def test_unknown_key_names_file_line_and_key() -> None:
    text = "services:\n  web:\n    image: busybox\n    deploy:\n      replica: 2\n"
    assert _error(text).startswith("stack.yaml:5: services.web.deploy.replica: unknown key")


def test_wrong_type_names_file_line_and_key() -> None:
    text = (
        "services:\n  a:\n    image: busybox\n"
        "  b:\n    image: busybox\n    deploy:\n      replicas: many\n"
    )
    assert _error(text).startswith("stack.yaml:7: services.b.deploy.replicas: Expected `int`")


def test_nested_mapping_key_is_named() -> None:
    text = (
        "services:\n  a:\n    image: busybox\n    depends_on:\n      b: {}\n"
        "      c:\n        condition: sometime\n  b: {image: busybox}\n  c: {image: busybox}\n"
    )
    assert _error(text).startswith("stack.yaml:7: services.a.depends_on.c.condition:")


def test_depends_on_cycle_rejected() -> None:
    text = (
        "services:\n  a:\n    image: busybox\n    depends_on: [b]\n"
        "  b:\n    image: busybox\n    depends_on: [c]\n"
        "  c:\n    image: busybox\n    depends_on: [a]\n"
    )
    message = _error(text)
    assert "depends_on has a cycle" in message and message.startswith("stack.yaml:")


def test_negative_replicas_rejected() -> None:
    text = "services:\n  a:\n    image: busybox\n    deploy:\n      replicas: -1\n"
    assert _error(text) == "stack.yaml:5: services.a.deploy.replicas: -1 is below 0"


def test_autoscale_min_above_max_rejected() -> None:
    text = "services:\n  a:\n    image: busybox\n    x-carte:\n      autoscale: {min: 5, max: 2}\n"
    assert _error(text) == "stack.yaml:5: services.a.x-carte.autoscale: min 5 is above max 2"


def test_port_published_twice_rejected() -> None:
    text = (
        "services:\n  a:\n    image: busybox\n    ports: ['8080:80']\n"
        "  b:\n    image: busybox\n    ports: ['9090:90', '8080:80']\n"
    )
    message = _error(text)
    assert message.startswith("stack.yaml:7: services.b.ports[1]: host port 8080/tcp")
    assert 'service "a"' in message


def test_other_bad_input() -> None:
    assert "not valid YAML" in _error("services: [\n")
    assert "neither image nor build" in _error("services:\n  a: {}\n")
    assert "required variable" in _error("services:\n  a:\n    image: ${I?needed}\n")
    assert "is not a duration" in _error(
        "services:\n  a:\n    image: b\n    healthcheck: {test: [CMD, x], interval: soon}\n"
    )
    assert "exactly one of" in _error(
        "services:\n  a:\n    image: b\n    x-carte: {readiness: {periodSeconds: 1}}\n"
    )
    assert 'network "back" is not declared' in _error(
        "services:\n  a:\n    image: b\n    networks: [back]\n"
    )
    assert 'unknown key "servics"' in _error("servics: {}\n")


def test_example_stacks_parse() -> None:

    examples = REPO / "config" / "examples"
    for path in sorted(examples.glob("*.yaml")):
        manifest, _s, _w = load_manifest(path.read_text(), path.name, {})
        assert manifest.services, path
