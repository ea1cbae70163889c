"""Checks a decoded manifest can pass only as a whole: references between services, cycles in
depends_on, counts and bounds, ports two services publish, values the model types cannot
express. The first problem raises `ManifestError` through `source.error` (file, line, key)."""

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from carte.stack import normalize
from carte.stack.model import Manifest, Service

if TYPE_CHECKING:
    from carte.stack.parse import Source

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def check(manifest: Manifest, source: "Source") -> None:
    if not manifest.services:
        raise source.error(("services",), "no services; declare at least one")
    published: dict[tuple[str, int, str], str] = {}
    for name, service in manifest.services.items():
        here = ("services", name)
        if not _NAME.fullmatch(name):
            raise source.error(here, f'service name "{name}" must be lowercase a-z, 0-9, _ . -')
        _check_service(name, service, manifest, source)
        for index, port in enumerate(normalize.ports(service)):
            key = (port.host_ip or "0.0.0.0", port.host_port, port.protocol)
            other = published.get(key)
            if other is not None and other != name:
                raise source.error(
                    (*here, "ports", index),
                    f"host port {port.host_port}/{port.protocol} is also published by "
                    f'service "{other}"; publish a different host port',
                )
            published[key] = name
    _check_cycles(manifest, source)


def _check_service(name: str, service: Service, manifest: Manifest, source: "Source") -> None:
    here = ("services", name)
    if not service.image and service.build is None:
        raise source.error(here, f'service "{name}" has neither image nor build; add one')
    deploy = service.deploy
    if deploy.replicas < 0:
        raise source.error((*here, "deploy", "replicas"), f"{deploy.replicas} is below 0")
    for key, config in (
        ("update_config", deploy.update_config),
        ("rollback_config", deploy.rollback_config),
    ):
        if config.parallelism < 0:
            raise source.error((*here, "deploy", key, "parallelism"), "is below 0")
        if not 0 <= config.max_failure_ratio <= 1:
            raise source.error((*here, "deploy", key, "max_failure_ratio"), "is not in 0-1")
    _values(here, service, source)
    for other in normalize.depends_on(service):
        if other not in manifest.services:
            raise source.error((*here, "depends_on"), f'service "{other}" is not in this file')
        if other == name:
            raise source.error((*here, "depends_on"), f'service "{name}" depends on itself')
    for network in normalize.networks(service):
        if network != "default" and network not in manifest.networks:
            raise source.error(
                (*here, "networks"), f'network "{network}" is not declared under networks'
            )
    carte = service.x_carte
    if carte.readiness is not None:
        probe = carte.readiness
        kinds = [k for k in (probe.httpGet, probe.tcpSocket, probe.exec) if k is not None]
        if len(kinds) != 1:
            raise source.error(
                (*here, "x-carte", "readiness"), "needs exactly one of httpGet, tcpSocket, exec"
            )
        if probe.periodSeconds <= 0 or probe.timeoutSeconds <= 0:
            raise source.error((*here, "x-carte", "readiness"), "periods must be above 0")
        if probe.successThreshold < 1 or probe.failureThreshold < 1:
            raise source.error((*here, "x-carte", "readiness"), "thresholds must be 1 or more")
    scale = carte.autoscale
    if scale is not None:
        where = (*here, "x-carte", "autoscale")
        if scale.min < 0:
            raise source.error((*where, "min"), f"{scale.min} is below 0")
        if scale.min > scale.max:
            raise source.error(where, f"min {scale.min} is above max {scale.max}")
        if not 0 < scale.target_cpu_percent:
            raise source.error((*where, "target_cpu_percent"), "must be above 0")
    for index, policy in enumerate(carte.policies):
        for port in policy.ports:
            text, _, proto = str(port).partition("/")
            if not text.isdigit() or not 0 < int(text) <= 65535 or proto not in ("", "tcp", "udp"):
                raise source.error(
                    (*here, "x-carte", "policies", index, "ports"),
                    f'"{port}" is not PORT or PORT/tcp|udp',
                )
        for other in policy.from_:
            if other not in manifest.services:
                raise source.error(
                    (*here, "x-carte", "policies", index), f'service "{other}" is not in this file'
                )


def _values(here: tuple[str, ...], service: Service, source: "Source") -> None:
    """Strings the types let through but normalize cannot read."""
    try:
        normalize.ports(service)
        normalize.container_ports(service)
    except ValueError as error:
        raise source.error((*here, "ports"), str(error)) from None
    limits = service.deploy.resources.limits
    checks: list[tuple[tuple[str, ...], Callable[[], object]]] = [
        (("deploy", "resources", "limits", "cpus"), lambda: normalize.nano_cpus(limits.cpus)),
        (("deploy", "resources", "limits", "memory"), lambda: normalize.size_bytes(limits.memory)),
        (
            ("deploy", "update_config", "delay"),
            lambda: normalize.seconds(service.deploy.update_config.delay),
        ),
        (
            ("deploy", "update_config", "monitor"),
            lambda: normalize.seconds(service.deploy.update_config.monitor),
        ),
    ]
    if service.healthcheck is not None:
        check = service.healthcheck
        checks += [
            (("healthcheck", "interval"), lambda: normalize.seconds(check.interval)),
            (("healthcheck", "timeout"), lambda: normalize.seconds(check.timeout)),
            (("healthcheck", "start_period"), lambda: normalize.seconds(check.start_period)),
        ]
    if service.stop_grace_period is not None:
        grace = service.stop_grace_period
        checks.append((("stop_grace_period",), lambda: normalize.seconds(grace)))
    for path, read in checks:
        try:
            read()
        except ValueError as error:
            raise source.error((*here, *path), str(error)) from None


def _check_cycles(manifest: Manifest, source: "Source") -> None:
    graph = {name: list(normalize.depends_on(s)) for name, s in manifest.services.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for other in graph[name]:
            if state.get(other) == 1:
                cycle = (
                    " -> ".join([*trail[trail.index(other) :], other]) if other in trail else other
                )
                raise source.error(
                    ("services", name, "depends_on"),
                    f"depends_on has a cycle ({cycle}); remove one of these dependencies",
                )
            if state.get(other) is None:
                visit(other, [*trail, other])
        state[name] = 2

    for name in graph:
        if state.get(name) is None:
            visit(name, [name])


def start_order(manifest: Manifest) -> list[str]:
    """Service names so that each comes after the services it depends on."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for other in normalize.depends_on(manifest.services[name]):
            visit(other)
        order.append(name)

    for name in manifest.services:
        visit(name)
    return order
