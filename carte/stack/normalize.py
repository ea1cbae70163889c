"""One form for Compose's short and long syntaxes: durations, sizes, ports, environment,
depends_on, networks and volumes. Each function raises `ValueError` with a one-line message
for a value it cannot read (the parser adds file, line and key)."""

import ipaddress
import re
import shlex

from carte.api.containers import PortSpec
from carte.stack.model import DependsOn, Mapping, NetworkAttach, PortLong, Service, Strings

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", re.IGNORECASE)
_SIZES = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def seconds(value: str | int | float) -> float:
    """A Compose duration ("1m30s", "500ms", 10) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if not text:
        return 0.0
    total, end = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != end:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        end = match.end()
    if end != len(text):
        raise ValueError(f'"{value}" is not a duration; write e.g. 10s, 1m30s or 500ms')
    return total


def size_bytes(value: str | int) -> int:
    """A Compose size ("512m", "1g", 1024) in bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f'"{value}" is not a size; write e.g. 512m or 1g')
    return int(float(match.group(1)) * _SIZES[match.group(2).lower()])


def nano_cpus(value: str | float | int) -> int:
    try:
        cpus = float(value)
    except ValueError:
        raise ValueError(f'"{value}" is not a number of CPUs; write e.g. 0.5') from None
    if cpus < 0:
        raise ValueError(f"cpus {value} is negative; write e.g. 0.5")
    return int(cpus * 1e9)


def words(value: Strings | None) -> list[str] | None:
    """command/entrypoint: a list as is, a string split as a shell would (no shell runs)."""
    if value is None or isinstance(value, list):
        return value
    return shlex.split(value)


def mapping(value: Mapping) -> dict[str, str | None]:
    """environment/labels: a mapping or a list of KEY=VALUE (KEY alone: from elsewhere)."""
    if isinstance(value, dict):
        return {k: _scalar(v) for k, v in value.items()}
    out: dict[str, str | None] = {}
    for item in value:
        key, sep, text = item.partition("=")
        out[key] = text if sep else None
    return out


def _scalar(value: str | int | float | bool | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ports(service: Service) -> list[PortSpec]:
    """Published ports ("8080:80", "127.0.0.1:8080:80/udp", "80", long form); a range
    "8080-8081:80-81" gives one spec per port. A port without a host side is not published
    on the host (Carte publishes only ports that name a host port)."""
    return ports_of(service.ports)


def ports_of(items: list[str | int | PortLong]) -> list[PortSpec]:
    out: list[PortSpec] = []
    for item in items:
        if isinstance(item, PortLong):
            if item.published is None or item.published == "":
                continue
            for host, container in _pairs(str(item.published), str(item.target)):
                out.append(
                    PortSpec(
                        container_port=container,
                        protocol=item.protocol,
                        host_ip=item.host_ip,
                        host_port=host,
                    )
                )
            continue
        out.extend(_short_port(str(item)))
    return out


def unpublished_ports(service: Service) -> list[PortSpec]:
    """Ports listed with no host side ("80", long form without published): Compose publishes
    them on a random host port (host_port 0 here; the stacks handler picks one)."""
    out: list[PortSpec] = []
    for item in service.ports:
        if isinstance(item, PortLong):
            if item.published is None or item.published == "":
                out.append(
                    PortSpec(
                        container_port=item.target, protocol=item.protocol, host_ip=item.host_ip
                    )
                )
            continue
        body, _, proto = str(item).partition("/")
        parts = body.rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else ""
        if len(parts) == 1 or not parts[-2]:
            for port in _range(parts[-1]):
                out.append(
                    PortSpec(
                        container_port=port,
                        protocol="udp" if proto == "udp" else "tcp",
                        host_ip=host_ip,
                    )
                )
    return out


def container_ports(service: Service) -> list[int]:
    """Every container port the service listens on: ports' container sides and expose."""
    found: set[int] = set()
    for item in service.ports:
        if isinstance(item, PortLong):
            found.add(item.target)
        else:
            text = str(item).rsplit("/", 1)[0]
            found.update(_range(text.rsplit(":", 1)[-1]))
    for item in service.expose:
        found.update(exposed(item))
    return sorted(found)


def exposed(item: str | int) -> list[int]:
    """The ports of one `expose` entry ("80", "8000-8001", "53/udp")."""
    text, _, proto = str(item).partition("/")
    if proto not in ("", "tcp", "udp"):
        raise ValueError(f'"{item}" has protocol "{proto}"; use tcp or udp')
    return _range(text)


def strings(value: Strings | None) -> list[str]:
    """A key that takes one string or a list of them (dns, tmpfs, env_file)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def extra_hosts(service: Service) -> list[str]:
    """extra_hosts as NAME:IP lines (list "name:ip" / "name=ip", or a mapping)."""
    value = service.extra_hosts
    out: list[str] = []
    if isinstance(value, dict):
        for name, addresses in value.items():
            for address in [addresses] if isinstance(addresses, str) else addresses:
                out.append(f"{name}:{address}")
        return out
    for item in value:
        sep = "=" if "=" in item else ":"
        name, _, address = item.partition(sep)
        out.append(f"{name}:{address}")
    return out


def restart_policy(service: Service) -> tuple[str, int]:
    """The replacement condition (none, on-failure, any) and attempts (0: unbounded): from
    Compose's `restart` when given, else from deploy.restart_policy."""
    if not service.restart:
        policy = service.deploy.restart_policy
        return policy.condition, policy.max_attempts
    name, _, count = service.restart.partition(":")
    if name == "no":
        return "none", 0
    if name == "on-failure":
        return "on-failure", int(count) if count.isdigit() else 0
    return "any", 0


def _short_port(text: str) -> list[PortSpec]:
    body, _, proto = text.partition("/")
    protocol = proto or "tcp"
    if protocol not in ("tcp", "udp"):
        raise ValueError(f'port "{text}" has protocol "{proto}"; use tcp or udp')
    parts = body.rsplit(":", 2)
    if len(parts) == 1:
        _range(parts[0])
        return []
    if len(parts) == 3 and parts[0]:
        try:
            ipaddress.IPv4Address(parts[0])
        except ValueError:
            raise ValueError(
                f'port "{text}" has host address "{parts[0]}"; write e.g. 127.0.0.1:8080:80'
            ) from None
    host_ip = parts[0] if len(parts) == 3 else ""
    host, container = parts[-2], parts[-1]
    if not host:
        return []
    return [
        PortSpec(container_port=c, protocol=protocol, host_ip=host_ip, host_port=h)  # type: ignore[arg-type]
        for h, c in _pairs(host, container)
    ]


def _pairs(host: str, container: str) -> list[tuple[int, int]]:
    hosts, containers = _range(host), _range(container)
    if len(hosts) != len(containers):
        raise ValueError(f'port range "{host}:{container}" has sides of different lengths')
    return list(zip(hosts, containers, strict=True))


def _range(text: str) -> list[int]:
    first, sep, last = text.partition("-")
    try:
        low, high = int(first), int(last) if sep else int(first)
    except ValueError:
        raise ValueError(f'port "{text}" is not a number or a range like 8080-8081') from None
    if not 0 < low <= high <= 65535:
        raise ValueError(f'port "{text}" is outside 1-65535')
    return list(range(low, high + 1))


def depends_on(service: Service) -> dict[str, DependsOn]:
    if isinstance(service.depends_on, list):
        return {name: DependsOn() for name in service.depends_on}
    return dict(service.depends_on)


def dependencies(service: Service) -> dict[str, DependsOn]:
    """depends_on plus the services `network_mode: service:X`, `ipc: service:X` and
    `volumes_from` need running first (Compose orders them the same way)."""
    found = depends_on(service)
    implied = [
        mode.partition(":")[2]
        for mode in (service.network_mode, service.ipc)
        if mode.startswith("service:")
    ]
    for entry in service.volumes_from:
        parts = entry.split(":")
        if parts[0] != "container":
            implied.append(parts[1] if parts[0] == "service" and len(parts) > 1 else parts[0])
    for name in implied:
        found.setdefault(name, DependsOn())
    return found


def networks(service: Service) -> dict[str, NetworkAttach]:
    """The service's networks (manifest names); none listed means "default"."""
    if isinstance(service.networks, list):
        chosen = {name: NetworkAttach() for name in service.networks}
    else:
        chosen = {name: attach or NetworkAttach() for name, attach in service.networks.items()}
    return chosen or {"default": NetworkAttach()}
