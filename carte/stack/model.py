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


class Build(_Strict, kw_only=True, frozen=True):
    context: str = "."
    dockerfile: str = ""
    args: Mapping = {}
    target: str = ""


class Healthcheck(_Strict, kw_only=True, frozen=True):
    test: Strings = []
    interval: Duration = "30s"
    timeout: Duration = "30s"
    retries: int = 3
    start_period: Duration = "0s"
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


class Deploy(_Strict, kw_only=True, frozen=True):
    mode: Literal["replicated"] = "replicated"
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
    restart: Literal["no", "always", "on-failure", "unless-stopped"] | str = "no"
    labels: Mapping = {}
    user: str = ""
    working_dir: str = ""
    hostname: str = ""
    stop_signal: str = ""
    stop_grace_period: Duration | None = None
    init: bool = False
    read_only: bool = False
    deploy: Deploy = Deploy()
    x_carte: CarteKeys = msgspec.field(default=CarteKeys(), name="x-carte")


class NetworkDecl(_Strict, kw_only=True, frozen=True):
    driver: str = "bridge"
    internal: bool = False
    external: bool = False
    name: str = ""
    labels: Mapping = {}


class VolumeDecl(_Strict, kw_only=True, frozen=True):
    driver: str = "local"
    external: bool = False
    name: str = ""
    labels: Mapping = {}


class Manifest(_Strict, kw_only=True, frozen=True):
    name: str = ""
    version: str = ""
    services: dict[str, Service]
    networks: dict[str, NetworkDecl | None] = {}
    volumes: dict[str, VolumeDecl | None] = {}
