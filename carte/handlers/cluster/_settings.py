"""This daemon's cluster settings: carte.yaml's ``cluster`` section (flags applied) under what
``carte cluster init`` / ``carte node join`` persisted in ROOT/cluster/joined.json.

ROOT/cluster/ also holds this daemon's bundle (ca.pem, cert.pem, key.pem): the control
plane's server certificate or the worker's node certificate, both signed by the cluster CA.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from carte.api.cluster import Capacity, NodeLoad
from carte.engine.config import ClusterConfig

JOINED = "joined.json"


class Joined(msgspec.Struct, frozen=True, kw_only=True):
    """What init/join persisted, so a restarted daemon stays in its cluster."""

    role: str
    name: str
    server: str = ""
    servers: list[str] = []
    """Every control plane a worker knows (``server``, the one in use, first)."""
    listen: str = ""
    advertise: str = ""


@dataclass(frozen=True)
class Settings:
    role: str
    name: str
    server: str
    listen: str
    advertise: str
    insecure: bool
    node_ttl: int
    leader_ttl: int
    certs: Path
    servers: tuple[str, ...] = ()
    """A worker's control planes, ``server`` (the one in use) first."""

    @property
    def has_bundle(self) -> bool:
        return (self.certs / "cert.pem").exists() and (self.certs / "key.pem").exists()


def certs_dir(root: Path) -> Path:
    return root / "cluster"


def load_settings(config: ClusterConfig, root: Path) -> Settings:
    """The effective settings: the config's, overlaid by joined.json (a flag's listen wins)."""
    settings = Settings(
        role=config.role,
        name=config.name or socket.gethostname(),
        server=config.server or "",
        listen=config.listen or "",
        advertise=config.advertise or "",
        insecure=config.insecure,
        node_ttl=config.node_ttl,
        leader_ttl=config.leader_ttl,
        certs=certs_dir(root),
    )
    try:
        joined = msgspec.json.decode((certs_dir(root) / JOINED).read_bytes(), type=Joined)
    except FileNotFoundError:
        return settings
    return replace(
        settings,
        role=joined.role,
        name=joined.name,
        server=joined.server,
        servers=tuple(joined.servers or [joined.server]),
        listen=settings.listen or joined.listen,
        advertise=joined.advertise or settings.advertise,
    )


def save_joined(root: Path, settings: Settings) -> None:
    """Persist the role (atomically) so a restart stays joined."""
    directory = certs_dir(root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    joined = Joined(
        role=settings.role,
        name=settings.name,
        server=settings.server,
        servers=list(settings.servers),
        listen=settings.listen,
        advertise=settings.advertise,
    )
    partial = directory / f".{JOINED}.tmp"
    partial.write_bytes(msgspec.json.encode(joined))
    os.replace(partial, directory / JOINED)


def forget_joined(root: Path) -> None:
    """Leave: the persisted role and the bundle go."""
    for name in (JOINED, "ca.pem", "cert.pem", "key.pem"):
        (certs_dir(root) / name).unlink(missing_ok=True)


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes ({} if it cannot be read)."""
    found: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                found[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def local_capacity() -> Capacity:
    """CPUs this daemon may use and the machine's memory."""
    memory = _meminfo().get("MemTotal", 0)
    return Capacity(cpus=float(len(os.sched_getaffinity(0))), memory=memory)


def local_load() -> NodeLoad:
    """This machine's load now, for a heartbeat."""
    memory = _meminfo()
    total = memory.get("MemTotal", 0)
    return NodeLoad(
        load1=round(os.getloadavg()[0], 2),
        cpus=os.cpu_count() or 1,
        memory_used=max(0, total - memory.get("MemAvailable", total)),
        memory_total=total,
    )


def split_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (HOST, PORT); ValueError if it is not that."""
    rest = address.removeprefix("tcp://")
    host, _, port = rest.rpartition(":")
    if not address.startswith("tcp://") or not host or not port.isdigit():
        raise ValueError(address)
    return host.strip("[]"), int(port)


def source_address(host: str, port: int) -> str:
    """The local address this machine reaches ``host`` from (no packet is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return str(probe.getsockname()[0])
