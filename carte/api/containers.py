"""Wire schema for containers and volumes: what `carte run/create` sends and `inspect/ps` show.

Field names follow Docker's concepts in snake_case. Durations are seconds (float); sizes are
bytes; times are RFC 3339 strings in UTC. Every Struct here is shared by client and daemon.
"""

from typing import Literal

import msgspec


class _Wire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request/response bodies: unknown fields are a 400 naming the field."""


class MountSpec(_Wire, kw_only=True):
    """`-v SRC:DST[:ro]` and `--mount type=bind|volume|tmpfs,...`."""

    type: Literal["bind", "volume", "tmpfs"]
    source: str = ""
    target: str
    read_only: bool = False
    propagation: str = ""
    tmpfs_size: int = 0
    tmpfs_mode: int = 0


class PortSpec(_Wire, kw_only=True):
    """`-p [IP:][HOST:]CONTAINER[/PROTO]`; host_port 0 means a random free port."""

    container_port: int
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: str = ""
    host_port: int = 0


class Ulimit(_Wire, kw_only=True):
    name: str
    soft: int
    hard: int


class Resources(_Wire, kw_only=True):
    """Limits; 0 means unlimited/unset, as Docker does."""

    memory: int = 0
    memory_swap: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0
    ulimits: list[Ulimit] = []


class HealthConfig(_Wire, kw_only=True):
    """HEALTHCHECK / --health-*: test is ["CMD", ...], ["CMD-SHELL", "cmd"] or ["NONE"]."""

    test: list[str]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0
    start_interval: float = 0.0
    """Seconds between probes during the start period (0: `interval`)."""


class RestartPolicy(_Wire, kw_only=True):
    name: Literal["no", "on-failure", "always", "unless-stopped"] = "no"
    maximum_retry_count: int = 0


class LogOptions(_Wire, kw_only=True):
    """--log-opt max-size/max-file; None means the daemon's configured default."""

    max_size: int | None = None
    max_file: int | None = None


# sysctls a container's own namespaces isolate (Docker's list); others would change the host
_NAMESPACED_SYSCTLS = frozenset(
    (
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    )
)


def namespaced_sysctl(key: str) -> bool:
    """Whether setting `key` inside a container changes only that container (Docker's rule:
    net.*, fs.mqueue.* and the IPC kernel.* keys)."""
    return key in _NAMESPACED_SYSCTLS or key.startswith(("fs.mqueue.", "net."))


class ContainerConfig(_Wire, kw_only=True):
    """Everything `carte create`/`carte run` can say about a container."""

    image: str
    name: str = ""
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = []
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    labels: dict[str, str] = {}
    tty: bool = False
    open_stdin: bool = False
    mounts: list[MountSpec] = []
    resources: Resources = msgspec.field(default_factory=Resources)
    cap_add: list[str] = []
    cap_drop: list[str] = []
    security_opt: list[str] = []
    read_only: bool = False
    init: bool = False
    restart: RestartPolicy = msgspec.field(default_factory=RestartPolicy)
    stop_signal: str = ""
    stop_timeout: int | None = None
    healthcheck: HealthConfig | None = None
    auto_remove: bool = False
    pid_mode: str = ""
    """"" (a pid namespace of its own), "host" or "container:REF" (`--pid`)."""
    ipc_mode: str = ""
    """"" or "private" (its own IPC namespace and /dev/shm), "shareable" (the same, joinable),
    "container:REF" (a shareable container's) or "host" (`--ipc`)."""
    shm_size: int = 0
    """Bytes of the container's own /dev/shm (`--shm-size`); 0: 64 MiB, Docker's default."""
    group_add: list[str] = []
    """More supplementary groups for the main process (`--group-add`): names from the image's
    /etc/group, or numeric gids."""
    domainname: str = ""
    """The UTS domain name (`--domainname`)."""
    network: str = "default"
    network_aliases: list[str] = []
    ip: str = ""
    ports: list[PortSpec] = []
    sysctls: dict[str, str] = {}
    """Namespaced kernel parameters set inside the container (`net.*`, `kernel.shm*`...)."""
    extra_hosts: list[str] = []
    """"NAME:IP" lines added to the container's /etc/hosts."""
    dns: list[str] = []
    """Name servers written to /etc/resolv.conf after the network's own resolver."""
    dns_search: list[str] = []
    mac_address: str = ""
    """The MAC address of its interface on its first network ("" = derived from the IP)."""
    publish_all: bool = False
    log: LogOptions = msgspec.field(default_factory=LogOptions)


ContainerStatus = Literal[
    "created", "running", "paused", "restarting", "exited", "removing", "dead"
]
HealthStatus = Literal["none", "starting", "healthy", "unhealthy"]


class HealthLogEntry(_Wire, kw_only=True):
    start: str
    end: str
    exit_code: int
    output: str


class Health(_Wire, kw_only=True):
    status: HealthStatus = "none"
    failing_streak: int = 0
    log: list[HealthLogEntry] = []


class ContainerState(_Wire, kw_only=True):
    status: ContainerStatus = "created"
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    health: Health | None = None


class Endpoint(_Wire, kw_only=True):
    """A container's attachment to one network, as the network handler made it."""

    network: str
    ip_address: str = ""
    prefix_len: int = 0
    gateway: str = ""
    mac_address: str = ""
    aliases: list[str] = []
    dns_servers: list[str] = []
    ports: list[PortSpec] = []


class ContainerIdentity(_Wire, kw_only=True):
    """What a container was made as; `ContainerDetails` shows it, the containers handler's
    record stores it."""

    id: str
    name: str
    created: str
    image: str
    image_id: str
    config: ContainerConfig


class ContainerDetails(ContainerIdentity, kw_only=True):
    """`carte inspect`."""

    state: ContainerState
    restart_count: int = 0
    log_path: str = ""
    endpoints: list[Endpoint] = []


class ContainerSummary(_Wire, kw_only=True):
    """One row of `carte ps`."""

    id: str
    name: str
    image: str
    command: str
    created: str
    state: ContainerStatus
    status: str
    ports: list[PortSpec] = []
    labels: dict[str, str] = {}
    health: HealthStatus = "none"


class CreateResult(_Wire, kw_only=True):
    id: str
    warnings: list[str] = []


class WaitResult(_Wire, kw_only=True):
    status_code: int
    oom_killed: bool = False
    error: str = ""


class ExecResult(_Wire, kw_only=True):
    """A non-interactive exec run to completion (health probes, `carte exec` without -i/-t)."""

    exit_code: int
    output: str = ""
    timed_out: bool = False


class TopResult(_Wire, kw_only=True):
    titles: list[str]
    processes: list[list[str]]


class ContainerStats(_Wire, kw_only=True):
    id: str
    name: str
    cpu_usage_ns: int = 0
    cpu_percent: float = 0.0
    memory_usage: int = 0
    memory_limit: int = 0
    pids: int = 0
    oom_kills: int = 0
    network_rx_bytes: int = 0
    """Bytes received on the container's interfaces but loopback (0 with the host network)."""
    network_tx_bytes: int = 0
    block_read_bytes: int = 0
    """Bytes the cgroup read from block devices (blkio on v1, io.stat on v2)."""
    block_write_bytes: int = 0


class PruneResult(_Wire, kw_only=True):
    deleted: list[str] = []
    space_reclaimed: int = 0


ANONYMOUS_VOLUME = "carte.anonymous"
"""The label of a volume made for a container's `-v /path` (its value: the container's id);
`volume prune` removes only these unless asked for all."""


class Volume(_Wire, kw_only=True):
    name: str
    driver: str = "local"
    mountpoint: str = ""
    created: str = ""
    labels: dict[str, str] = {}
    options: dict[str, str] = {}
    """The local driver's options (`-o type=none,o=bind,device=DIR` or `type=tmpfs`): what is
    mounted on the mountpoint, as Docker's local driver does."""
    in_use_by: list[str] = []


class ContainerLocation(_Wire, kw_only=True):
    """Where a container lives on the host, for handlers that work on it directly (attach, exec,
    cp, export, commit): `ResolveContainer` answers it. `shim_socket` is "" when no shim runs
    (the container is created-but-never-started before its shim exists, or stopped)."""

    id: str
    name: str
    status: ContainerStatus
    pid: int = 0
    shim_socket: str = ""
    state_dir: str = ""
    bundle: str = ""
    log_path: str = ""
    upper_dir: str = ""
    lower_dirs: list[str] = []
    tty: bool = False
    open_stdin: bool = False
    network: str = ""
    """The network mode the container was created with (a name, "none", "host")."""
    hostname: str = ""
    labels: dict[str, str] = {}
    connected: list[str] = []
    """Networks joined with `network connect`, joined again at each start."""


class ContainerUsage(_Wire, kw_only=True):
    """What one container uses, for the handlers that must not remove it from under it
    (images, volumes, archives): `ListContainerUsage` answers one per container."""

    id: str
    name: str
    status: ContainerStatus
    image_id: str
    volumes: list[str] = []
    """Names of the named volumes it mounts."""


class ExecOptions(_Wire, kw_only=True):
    """The first message on the exec WebSocket (`carte exec`): what to run and how."""

    cmd: list[str]
    tty: bool = False
    stdin: bool = False
    detach: bool = False
    user: str = ""
    workdir: str = ""
    env: list[str] = []
    rows: int = 0
    cols: int = 0
