"""The Compose file as msgspec Structs: the keys Carte supports, in Compose's own spellings.

Short and long syntaxes are both accepted (a union per field); `normalize.py` turns them into
one form. Unknown keys are errors, except `x-*` extension keys, which the parser drops before
decoding (Carte's own `x-carte` of a service arrives here as `x_carte`).
"""

from typing import Literal

import msgspec


class _Strict(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every manifest Struct: an unknown key is an error naming its path."""


Duration = str | int | float
Size = str | int
Strings = str | list[str]
Mapping = dict[str, str | int | float | bool | None] | list[str]


class FileRef(_Strict, kw_only=True, frozen=True):
    """A service's long form of a secret or config: which one, where, with which owner/mode."""

    source: str
    target: str = ""
    uid: str | int = ""
    gid: str | int = ""
    mode: int | str | None = None


class Build(_Strict, kw_only=True, frozen=True):
    context: str = "."
    dockerfile: str = ""
    dockerfile_inline: str = ""
    args: Mapping = {}
    target: str = ""
    secrets: list[str | FileRef] = []
    labels: Mapping = {}
    network: str = ""
    no_cache: bool = False
    pull: bool = False


class Healthcheck(_Strict, kw_only=True, frozen=True):
    test: Strings = []
    interval: Duration = "30s"
    timeout: Duration = "30s"
    retries: int = 3
    start_period: Duration = "0s"
    start_interval: Duration = "5s"
    disable: bool = False


class PortLong(_Strict, kw_only=True, frozen=True):
    target: int
    published: str | int | None = None
    host_ip: str = ""
    protocol: Literal["tcp", "udp"] = "tcp"
    mode: str = "ingress"


class VolumeLong(_Strict, kw_only=True, frozen=True):
    type: Literal["volume", "bind", "tmpfs"] = "volume"
    source: str = ""
    target: str
    read_only: bool = False


class DependsOn(_Strict, kw_only=True, frozen=True):
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"] = (
        "service_started"
    )
    restart: bool = False
    required: bool = True


class NetworkAttach(_Strict, kw_only=True, frozen=True):
    aliases: list[str] = []
    ipv4_address: str = ""
    priority: int = 0


class Limits(_Strict, kw_only=True, frozen=True):
    cpus: str | float | int = 0
    memory: Size = 0
    pids: int = 0


class ResourcesSpec(_Strict, kw_only=True, frozen=True):
    limits: Limits = Limits()
    reservations: dict[str, object] = {}


class UpdateConfig(_Strict, kw_only=True, frozen=True):
    parallelism: int = 1
    delay: Duration = "0s"
    order: Literal["start-first", "stop-first"] = "stop-first"
    failure_action: Literal["rollback", "pause", "continue"] = "rollback"
    monitor: Duration = "5s"
    max_failure_ratio: float = 0.0


class RestartPolicySpec(_Strict, kw_only=True, frozen=True):
    condition: Literal["none", "on-failure", "any"] = "any"
    delay: Duration = "0s"
    max_attempts: int = 0
    window: Duration = "0s"


class Placement(_Strict, kw_only=True, frozen=True):
    """Recorded and shown by `carte service inspect`; used by the cluster's scheduler."""

    constraints: list[str] = []
    preferences: list[dict[str, str]] = []
    max_replicas_per_node: int = 0


class Deploy(_Strict, kw_only=True, frozen=True):
    mode: Literal["replicated"] = "replicated"
    placement: Placement = Placement()
    replicas: int = 1
    resources: ResourcesSpec = ResourcesSpec()
    update_config: UpdateConfig = UpdateConfig()
    rollback_config: UpdateConfig = UpdateConfig()
    restart_policy: RestartPolicySpec = RestartPolicySpec()
    labels: Mapping = {}


class HttpGet(_Strict, kw_only=True, frozen=True):
    path: str = "/"
    port: int
    scheme: Literal["HTTP"] = "HTTP"


class TcpSocket(_Strict, kw_only=True, frozen=True):
    port: int


class ExecAction(_Strict, kw_only=True, frozen=True):
    command: list[str]


class Readiness(_Strict, kw_only=True, frozen=True):
    """Kubernetes' readinessProbe: exactly one of httpGet, tcpSocket, exec; its defaults."""

    httpGet: HttpGet | None = None
    tcpSocket: TcpSocket | None = None
    exec: ExecAction | None = None
    initialDelaySeconds: float = 0.0
    periodSeconds: float = 10.0
    timeoutSeconds: float = 1.0
    successThreshold: int = 1
    failureThreshold: int = 3


class Autoscale(_Strict, kw_only=True, frozen=True):
    min: int = 1
    max: int
    target_cpu_percent: int = 80
    target_memory_percent: int = 0
    scale_down_stabilization: Duration = "300s"


class Policy(_Strict, kw_only=True, frozen=True):
    """Allow traffic from the services in `from` to this service (on `ports`; none: any)."""

    from_: list[str] = msgspec.field(default=[], name="from")
    ports: list[int | str] = []


class CarteKeys(_Strict, kw_only=True, frozen=True):
    readiness: Readiness | None = None
    autoscale: Autoscale | None = None
    policies: list[Policy] = []


class Logging(_Strict, kw_only=True, frozen=True):
    driver: Literal["json-file", "local", ""] = ""
    options: dict[str, str | int] = {}


class Ulimit(_Strict, kw_only=True, frozen=True):
    soft: int
    hard: int


class Service(_Strict, kw_only=True, frozen=True):
    image: str = ""
    build: str | Build | None = None
    command: Strings | None = None
    entrypoint: Strings | None = None
    environment: Mapping = {}
    env_file: Strings = []
    ports: list[str | int | PortLong] = []
    expose: list[str | int] = []
    volumes: list[str | VolumeLong] = []
    networks: list[str] | dict[str, NetworkAttach | None] = []
    depends_on: list[str] | dict[str, DependsOn] = []
    healthcheck: Healthcheck | None = None
    restart: str = ""
    """Compose's restart ("no", always, on-failure[:N], unless-stopped); "" when not given,
    then deploy.restart_policy decides (Swarm's default: any)."""
    labels: Mapping = {}
    user: str = ""
    working_dir: str = ""
    hostname: str = ""
    stop_signal: str = ""
    stop_grace_period: Duration | None = None
    init: bool = False
    read_only: bool = False
    container_name: str = ""
    profiles: list[str] = []
    secrets: list[str | FileRef] = []
    configs: list[str | FileRef] = []
    cap_add: list[str] = []
    cap_drop: list[str] = []
    ulimits: dict[str, int | Ulimit] = {}
    sysctls: Mapping = {}
    extra_hosts: list[str] | dict[str, str | list[str]] = []
    dns: Strings = []
    dns_search: Strings = []
    tmpfs: Strings = []
    network_mode: str = ""
    volumes_from: list[str] = []
    ipc: str = ""
    pid: str = ""
    stdin_open: bool = False
    tty: bool = False
    platform: str = ""
    runtime: str = ""
    mac_address: str = ""
    pull_policy: Literal["always", "never", "missing", "if_not_present", "build", ""] = ""
    security_opt: list[str] = []
    logging: Logging = Logging()
    links: list[str] = []
    mem_limit: Size = 0
    cpus: str | float | int = 0
    pids_limit: int = 0
    shm_size: Size = 0
    group_add: list[str | int] = []
    domainname: str = ""
    deploy: Deploy = Deploy()
    x_carte: CarteKeys = msgspec.field(default=CarteKeys(), name="x-carte")


class IpamPool(_Strict, kw_only=True, frozen=True):
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""


class Ipam(_Strict, kw_only=True, frozen=True):
    driver: str = "default"
    config: list[IpamPool] = []


class _TopLevelDecl(_Strict, kw_only=True, frozen=True):
    """What a top-level network, volume, secret or config may say besides its own keys: that
    it exists already (`external`), the name it has or gets, its labels."""

    external: bool = False
    name: str = ""
    labels: Mapping = {}


class NetworkDecl(_TopLevelDecl, kw_only=True, frozen=True):
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    ipam: Ipam = Ipam()
    driver_opts: Mapping = {}


class VolumeDecl(_TopLevelDecl, kw_only=True, frozen=True):
    driver: str = "local"
    driver_opts: Mapping = {}


class FileDecl(_TopLevelDecl, kw_only=True, frozen=True):
    """A top-level secret or config: exactly one of file, environment, content."""

    file: str = ""
    environment: str = ""
    content: str = ""


class Manifest(_Strict, kw_only=True, frozen=True):
    name: str = ""
    version: str = ""
    services: dict[str, Service]
    networks: dict[str, NetworkDecl | None] = {}
    volumes: dict[str, VolumeDecl | None] = {}
    secrets: dict[str, FileDecl] = {}
    configs: dict[str, FileDecl] = {}


REFUSED_SERVICE_KEYS: dict[str, str] = {
    "privileged": "a privileged container holds the host's root; grant what it needs with "
    "cap_add, devices are not passed through",
    "devices": "device nodes are not passed into containers",
    "device_cgroup_rules": "device nodes are not passed into containers",
    "gpus": "device nodes are not passed into containers",
    "userns_mode": "user-namespace remapping is not available",
    "cgroup": "replicas' cgroups are placed by Carte",
    "cgroup_parent": "replicas' cgroups are placed by Carte",
    "dns_opt": "resolver options are not written; use dns and dns_search",
    "isolation": "a Windows-only key",
    "credential_spec": "a Windows-only key",
    "storage_opt": "the overlay root has no per-container quota",
    "external_links": "legacy links to containers outside the stack; put them on a shared "
    "external network instead",
    "scale": "use deploy.replicas",
    "blkio_config": "cgroup tuning beyond deploy.resources limits is not available",
    "cpu_shares": "cgroup tuning beyond deploy.resources limits is not available",
    "cpu_quota": "cgroup tuning beyond deploy.resources limits is not available",
    "cpu_period": "cgroup tuning beyond deploy.resources limits is not available",
    "cpuset": "cgroup tuning beyond deploy.resources limits is not available",
    "cpu_count": "cgroup tuning beyond deploy.resources limits is not available",
    "cpu_percent": "cgroup tuning beyond deploy.resources limits is not available",
    "cpu_rt_period": "cgroup tuning beyond deploy.resources limits is not available",
    "cpu_rt_runtime": "cgroup tuning beyond deploy.resources limits is not available",
    "uts": "replicas keep their own UTS namespace; set hostname",
    "mem_reservation": "cgroup tuning beyond deploy.resources limits is not available",
    "memswap_limit": "cgroup tuning beyond deploy.resources limits is not available",
    "mem_swappiness": "cgroup tuning beyond deploy.resources limits is not available",
    "oom_kill_disable": "cgroup tuning beyond deploy.resources limits is not available",
    "oom_score_adj": "cgroup tuning beyond deploy.resources limits is not available",
    "develop": "compose watch is not available; re-run carte apply",
    "post_start": "lifecycle hooks are not available",
    "pre_stop": "lifecycle hooks are not available",
    "volume_driver": "only local volumes exist",
    "annotations": "use labels",
    "attach": "logs are read with carte service logs",
    "use_api_socket": "the daemon's socket is not passed into containers",
    "label_file": "write the labels under labels",
    "models": "model runners are not available",
    "provider": "provider services are not available",
}
"""Service keys of the Compose specification Carte refuses, with the reason (docs/compose.md)."""
