"""Checks a decoded manifest can pass only as a whole: references between services, cycles in
depends_on, counts and bounds, ports two services publish, values the model types cannot
express. Every problem is reported through `source.report` (file, line, key); the caller
raises them all at once."""

import ipaddress
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carte.api.containers import namespaced_sysctl
from carte.stack import normalize
from carte.stack.model import FileRef, Manifest, Service

if TYPE_CHECKING:
    from carte.stack.parse import Source

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_RESTART = re.compile(r"no|always|unless-stopped|on-failure(:[0-9]+)?")
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_MAC = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")
_ULIMITS = frozenset(
    (
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    )
)
_RUNTIMES = frozenset(("", "carte"))


@dataclass(frozen=True)
class Ceilings:
    """Upper bounds on the counts a stack file gives, checked before anything is stored (a
    count the daemon would try to honour could take all its memory): the stacks handler's
    options in carte.yaml (`stacks: {max_replicas, max_ports}`)."""

    replicas: int = 1000
    """deploy.replicas and x-carte.autoscale min/max of one service."""
    ports: int = 1000
    """Ports one service publishes or exposes, ranges counted port by port."""


_ULIMIT_MAX = 2**63 - 1  # what setrlimit takes below RLIM_INFINITY (written -1)


def check(manifest: Manifest, source: "Source", ceilings: Ceilings | None = None) -> None:
    if not manifest.services:
        source.report(("services",), "no services; declare at least one")
        return
    published: dict[tuple[str, int, str], str] = {}
    for name, service in manifest.services.items():
        here = ("services", name)
        if not _NAME.fullmatch(name):
            source.report(here, f'service name "{name}" must be letters, digits, _ . -')
            continue
        _check_service(name, service, manifest, source)
        _check_compose_keys(name, service, manifest, source)
        _check_bounds(here, service, source, ceilings or Ceilings())
        try:
            specs = normalize.ports(service)
        except ValueError:
            continue  # reported by _values
        for index, port in enumerate(specs):
            if not port.host_port:
                continue
            key = (port.host_ip or "0.0.0.0", port.host_port, port.protocol)
            other = published.get(key)
            if other is not None and other != name:
                source.report(
                    (*here, "ports", index),
                    f"host port {port.host_port}/{port.protocol} is also published by "
                    f'service "{other}"; publish a different host port',
                )
            published[key] = name
    for kind, decls in (("secrets", manifest.secrets), ("configs", manifest.configs)):
        for decl_name, decl in decls.items():
            given = [k for k in (decl.file, decl.environment, decl.content) if k]
            where = (kind, decl_name)
            if decl.external:
                source.report(
                    (*where, "external"),
                    f"external {kind} live in a Swarm cluster; give file:, environment: or "
                    "content: instead",
                )
            elif len(given) != 1:
                source.report(where, "needs exactly one of file, environment, content")
    for net_name, net in manifest.networks.items():
        if net is None:
            continue
        where = ("networks", net_name)
        if net.driver not in ("bridge", "default", "overlay") and not net.external:
            source.report(
                (*where, "driver"), f'driver "{net.driver}" is not available; use bridge or overlay'
            )
        if net.enable_ipv6:
            source.report(
                (*where, "enable_ipv6"), "IPv6 networks are not available; remove enable_ipv6"
            )
        for index, pool in enumerate(net.ipam.config):
            try:
                if pool.subnet:
                    subnet = ipaddress.IPv4Network(pool.subnet)
                    if pool.gateway and ipaddress.IPv4Address(pool.gateway) not in subnet:
                        source.report(
                            (*where, "ipam", "config", index, "gateway"),
                            f"{pool.gateway} is not in subnet {pool.subnet}",
                        )
            except ValueError as error:
                source.report(
                    (*where, "ipam", "config", index), f"{error}; write e.g. 172.28.0.0/16"
                )
        if len(net.ipam.config) > 1:
            source.report((*where, "ipam", "config"), "one subnet per network is supported")
    _check_cycles(manifest, source)


def _check_compose_keys(name: str, service: Service, manifest: Manifest, source: "Source") -> None:
    """The Compose keys beyond Swarm's: values their types let through but Carte cannot use."""
    here = ("services", name)
    if service.restart and not _RESTART.fullmatch(service.restart):
        source.report(
            (*here, "restart"),
            f'"{service.restart}" is not a restart policy; use "no", always, on-failure[:N] '
            "or unless-stopped",
        )
    if service.container_name:
        if not _CONTAINER_NAME.fullmatch(service.container_name):
            source.report((*here, "container_name"), "must be letters, digits, _ . - (128 at most)")
        if service.deploy.replicas > 1:
            source.report(
                (*here, "container_name"),
                f"{service.deploy.replicas} replicas cannot share one container name; remove "
                "container_name or set deploy.replicas: 1",
            )
    for kind, refs in (("secrets", service.secrets), ("configs", service.configs)):
        declared = manifest.secrets if kind == "secrets" else manifest.configs
        for index, ref in enumerate(refs):
            ref_name = ref.source if isinstance(ref, FileRef) else ref
            if ref_name not in declared:
                source.report(
                    (*here, kind, index), f'{kind[:-1]} "{ref_name}" is not declared under {kind}'
                )
            if isinstance(ref, FileRef):
                if ref.mode is not None and _mode(ref.mode) is None:
                    source.report(
                        (*here, kind, index, "mode"), f'"{ref.mode}" is not a mode; write e.g. 0440'
                    )
                for key in ("uid", "gid"):
                    value = str(getattr(ref, key))
                    if value and not value.isdigit():
                        source.report((*here, kind, index, key), "must be a number")
    build = service.build
    if build is not None and not isinstance(build, str):
        for index, ref in enumerate(build.secrets):
            ref_name = ref.source if isinstance(ref, FileRef) else ref
            if ref_name not in manifest.secrets:
                source.report(
                    (*here, "build", "secrets", index),
                    f'secret "{ref_name}" is not declared under secrets',
                )
    host_network = service.network_mode == "host"
    for key in normalize.mapping(service.sysctls):
        if not namespaced_sysctl(key):
            source.report(
                (*here, "sysctls", key),
                f"{key} is not namespaced: it would change the host; only net.*, fs.mqueue.* "
                "and kernel.shm*/msg*/sem are allowed",
            )
        elif host_network and key.startswith("net."):
            source.report(
                (*here, "sysctls", key),
                f"{key} would change the host's network with network_mode: host; remove one",
            )
    for ulimit in service.ulimits:
        if ulimit not in _ULIMITS:
            source.report(
                (*here, "ulimits", ulimit), f'"{ulimit}" is not a ulimit; use e.g. nofile'
            )
    for index, entry in enumerate(normalize.extra_hosts(service)):
        address = entry.partition(":")[2]
        try:
            if address != "host-gateway":
                ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            source.report(
                (*here, "extra_hosts", index), f'"{entry}" is not NAME:IP; write e.g. db:10.0.0.5'
            )
    for index, path in enumerate(normalize.strings(service.tmpfs)):
        if not path.startswith("/"):
            source.report((*here, "tmpfs", index), f'"{path}" is not an absolute path')
    mode = service.network_mode
    kind, _, target = mode.partition(":")
    if mode and not (
        mode in ("none", "host", "bridge") or (target and kind in ("service", "container"))
    ):
        source.report(
            (*here, "network_mode"),
            f'"{mode}" is not a network mode; use none, host, service:NAME or container:NAME',
        )
    elif kind == "service" and target not in manifest.services:
        source.report((*here, "network_mode"), f'service "{target}" is not in this file')
    if mode and mode != "bridge" and service.networks:
        source.report((*here, "networks"), "network_mode and networks cannot be combined; keep one")
    for index, entry in enumerate(service.volumes_from):
        parts = entry.split(":")
        if parts[0] == "container" and len(parts) >= 2:
            continue
        other = parts[1] if parts[0] == "service" and len(parts) >= 2 else parts[0]
        if other not in manifest.services:
            source.report(
                (*here, "volumes_from", index),
                f'service "{other}" is not in this file; use SERVICE or container:NAME',
            )
    _check_ipc(here, service, manifest, source)
    if service.pid and service.pid != "host":
        source.report(
            (*here, "pid"),
            f'pid "{service.pid}" is not supported: a replica has its own PID namespace or '
            "the host's (pid: host)",
        )
    if service.platform and not _host_platform(service.platform):
        source.report(
            (*here, "platform"),
            f'"{service.platform}" is not this host\'s platform ({host_platform()}); Carte runs '
            "images of the host's architecture only (no emulation)",
        )
    if service.runtime not in _RUNTIMES:
        source.report(
            (*here, "runtime"),
            f'runtime "{service.runtime}" is not available: replicas run under Carte\'s own OCI '
            "runtime; remove the key or write runtime: carte",
        )
    if service.mac_address and not _MAC.fullmatch(service.mac_address):
        source.report((*here, "mac_address"), "is not a MAC address; write e.g. 02:42:ac:11:00:02")
    elif service.mac_address and service.deploy.replicas > 1:
        source.report(
            (*here, "mac_address"),
            "one MAC address cannot serve several replicas; set deploy.replicas: 1",
        )
    attach = normalize.networks(service)
    for net_name, network in attach.items():
        if network.ipv4_address:
            try:
                ipaddress.IPv4Address(network.ipv4_address)
            except ValueError:
                source.report(
                    (*here, "networks", net_name, "ipv4_address"), "is not an IPv4 address"
                )
            if service.deploy.replicas > 1:
                source.report(
                    (*here, "networks", net_name, "ipv4_address"),
                    "one address cannot serve several replicas; set deploy.replicas: 1",
                )
    for key, setting in service.logging.options.items():
        at = (*here, "logging", "options", key)
        if key not in ("max-size", "max-file"):
            source.report(at, "only max-size and max-file are read")
        elif key == "max-file" and not str(setting).isdigit():
            source.report(at, f'"{setting}" is not a number of files')
        elif key == "max-size":
            try:
                normalize.size_bytes(setting)
            except ValueError as error:
                source.report(at, str(error))
    for index, entry in enumerate(normalize.strings(service.tmpfs)):
        for option in entry.partition(":")[2].split(","):
            name, _, value = option.partition("=")
            if name == "size":
                try:
                    normalize.size_bytes(value)
                except ValueError as error:
                    source.report((*here, "tmpfs", index), str(error))


def host_platform() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return f"linux/{arch}"


def _host_platform(value: str) -> bool:
    wanted = value.lower().replace("x86_64", "amd64").replace("aarch64", "arm64")
    host = host_platform()
    return wanted in (host, host.split("/")[1]) or wanted.startswith(host + "/")


def _mode(value: int | str) -> int | None:
    if isinstance(value, int):
        return value if 0 <= value <= 0o7777 else None
    try:
        number = int(value, 8)
    except ValueError:
        return None
    return number if 0 <= number <= 0o7777 else None


def _check_ipc(
    here: tuple[str, ...], service: Service, manifest: Manifest, source: "Source"
) -> None:
    """`ipc`: private, shareable, host, container:NAME or service:NAME (a service of this
    file whose ipc is shareable, as the engine joins only a shareable namespace)."""
    kind, _, target = service.ipc.partition(":")
    if not service.ipc or service.ipc in ("private", "shareable", "host"):
        return
    if not (target and kind in ("service", "container")):
        source.report(
            (*here, "ipc"),
            f'"{service.ipc}" is not an IPC mode; use private, shareable, host, '
            "service:NAME or container:NAME",
        )
    elif kind == "service" and target not in manifest.services:
        source.report((*here, "ipc"), f'service "{target}" is not in this file')
    elif kind == "service" and manifest.services[target].ipc != "shareable":
        source.report(
            (*here, "ipc"),
            f'service "{target}" is not shareable: only a shareable IPC namespace can be '
            f"joined; give {target} ipc: shareable",
        )


def _check_service(name: str, service: Service, manifest: Manifest, source: "Source") -> None:
    here = ("services", name)
    if not service.image and service.build is None:
        source.report(here, f'service "{name}" has neither image nor build; add one')
    deploy = service.deploy
    if deploy.replicas < 0:
        source.report((*here, "deploy", "replicas"), f"{deploy.replicas} is below 0")
    for key, config in (
        ("update_config", deploy.update_config),
        ("rollback_config", deploy.rollback_config),
    ):
        if config.parallelism < 0:
            source.report((*here, "deploy", key, "parallelism"), "is below 0")
        if not 0 <= config.max_failure_ratio <= 1:
            source.report((*here, "deploy", key, "max_failure_ratio"), "is not in 0-1")
    _values(here, service, source)
    for index, other in enumerate(normalize.depends_on(service)):
        at = (*here, "depends_on", index if isinstance(service.depends_on, list) else other)
        if other not in manifest.services:
            source.report(
                at, f'service "{other}" is not in this file (or not enabled by a profile)'
            )
        if other == name:
            source.report(at, f'service "{name}" depends on itself')
    for index, network in enumerate(normalize.networks(service)):
        if network != "default" and network not in manifest.networks:
            at = (*here, "networks", index if isinstance(service.networks, list) else network)
            source.report(at, f'network "{network}" is not declared under networks')
    carte = service.x_carte
    if carte.readiness is not None:
        probe = carte.readiness
        kinds = [k for k in (probe.httpGet, probe.tcpSocket, probe.exec) if k is not None]
        if len(kinds) != 1:
            source.report(
                (*here, "x-carte", "readiness"), "needs exactly one of httpGet, tcpSocket, exec"
            )
        if probe.periodSeconds <= 0 or probe.timeoutSeconds <= 0:
            source.report((*here, "x-carte", "readiness"), "periods must be above 0")
        if probe.successThreshold < 1 or probe.failureThreshold < 1:
            source.report((*here, "x-carte", "readiness"), "thresholds must be 1 or more")
    scale = carte.autoscale
    if scale is not None:
        where = (*here, "x-carte", "autoscale")
        if scale.min < 0:
            source.report((*where, "min"), f"{scale.min} is below 0")
        if scale.min > scale.max:
            source.report(where, f"min {scale.min} is above max {scale.max}")
        if not 0 < scale.target_cpu_percent:
            source.report((*where, "target_cpu_percent"), "must be above 0")
    for index, policy in enumerate(carte.policies):
        for port in policy.ports:
            text, _, proto = str(port).partition("/")
            if not text.isdigit() or not 0 < int(text) <= 65535 or proto not in ("", "tcp", "udp"):
                source.report(
                    (*here, "x-carte", "policies", index, "ports"),
                    f'"{port}" is not PORT or PORT/tcp|udp',
                )
        for other in policy.from_:
            if other not in manifest.services:
                source.report(
                    (*here, "x-carte", "policies", index), f'service "{other}" is not in this file'
                )


def port_count(service: Service) -> int:
    """Ports the service publishes and exposes, ranges counted port by port; raises
    `ValueError` for a port it cannot read."""
    return len(normalize.ports(service)) + sum(len(normalize.exposed(e)) for e in service.expose)


def _check_bounds(
    here: tuple[str, ...], service: Service, source: "Source", ceilings: Ceilings
) -> None:
    """Counts within their ceilings, durations not negative."""
    key = "stacks.max_replicas in carte.yaml"
    counts: list[tuple[tuple[str, ...], int]] = [(("deploy", "replicas"), service.deploy.replicas)]
    if service.x_carte.autoscale is not None:
        scale = service.x_carte.autoscale
        counts += [(("x-carte", "autoscale", "min"), scale.min)]
        counts += [(("x-carte", "autoscale", "max"), scale.max)]
    for path, count in counts:
        if count > ceilings.replicas:
            source.report(
                (*here, *path),
                f"{count} replicas is above the ceiling of {ceilings.replicas} ({key}); "
                "lower it or raise the ceiling",
            )
    try:
        ports = port_count(service)
    except ValueError:
        ports = 0  # reported by _values
    if ports > ceilings.ports:
        source.report(
            (*here, "ports"),
            f"{ports} ports is above the ceiling of {ceilings.ports} per service "
            "(stacks.max_ports in carte.yaml); publish fewer or raise the ceiling",
        )
    for name, value in service.ulimits.items():
        values = [value] if isinstance(value, int) else [value.soft, value.hard]
        if any(not -1 <= v <= _ULIMIT_MAX for v in values):
            source.report(
                (*here, "ulimits", name),
                f"{name}: each value must be -1 (unlimited) or 0 to {_ULIMIT_MAX}",
            )
    deploy = service.deploy
    # (path, value, read by _values too): those are only checked for a sign here
    durations: list[tuple[tuple[str, ...], object, bool]] = [
        (("deploy", "update_config", "delay"), deploy.update_config.delay, True),
        (("deploy", "update_config", "monitor"), deploy.update_config.monitor, True),
        (("deploy", "rollback_config", "delay"), deploy.rollback_config.delay, False),
        (("deploy", "rollback_config", "monitor"), deploy.rollback_config.monitor, False),
        (("deploy", "restart_policy", "delay"), deploy.restart_policy.delay, False),
        (("deploy", "restart_policy", "window"), deploy.restart_policy.window, False),
        (("stop_grace_period",), service.stop_grace_period, True),
    ]
    if service.x_carte.autoscale is not None:
        stabilization = service.x_carte.autoscale.scale_down_stabilization
        at = ("x-carte", "autoscale", "scale_down_stabilization")
        durations.append((at, stabilization, False))
    if service.healthcheck is not None:
        check = service.healthcheck
        for field in ("start_interval", "interval", "timeout", "start_period"):
            durations.append((("healthcheck", field), getattr(check, field), True))
    for where, duration, read_elsewhere in durations:
        if duration is None:
            continue
        if str(duration).strip().startswith("-"):
            source.report((*here, *where), f'"{duration}" is negative; give 0 or more, e.g. 10s')
        elif not read_elsewhere and isinstance(duration, str | int | float):
            try:
                normalize.seconds(duration)
            except ValueError as error:
                source.report((*here, *where), str(error))


def _values(here: tuple[str, ...], service: Service, source: "Source") -> None:
    """Strings the types let through but normalize cannot read."""
    for index, port in enumerate(service.ports):
        try:
            normalize.ports_of([port])
        except ValueError as error:
            source.report((*here, "ports", index), str(error))
    for index, exposed in enumerate(service.expose):
        try:
            normalize.exposed(exposed)
        except ValueError as error:
            source.report((*here, "expose", index), str(error))
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
            (("healthcheck", "start_interval"), lambda: normalize.seconds(check.start_interval)),
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
            source.report((*here, *path), str(error))


def _check_cycles(manifest: Manifest, source: "Source") -> None:
    graph = {name: list(normalize.depends_on(s)) for name, s in manifest.services.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for other in graph[name]:
            if other not in graph:  # reported by the service's own check
                continue
            if state.get(other) == 1:
                cycle = (
                    " -> ".join([*trail[trail.index(other) :], other]) if other in trail else other
                )
                source.report(
                    ("services", name, "depends_on"),
                    f"depends_on has a cycle ({cycle}); remove one of these dependencies",
                )
                continue
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
        for other in normalize.dependencies(manifest.services[name]):
            if other in manifest.services:
                visit(other)
        order.append(name)

    for name in manifest.services:
        visit(name)
    return order
