"""A service of a manifest as the container config of one replica, and the parts of a service
that decide whether its replicas must be replaced."""

import os
import secrets

import msgspec

from carte.api.containers import (
    ContainerConfig,
    HealthConfig,
    LogOptions,
    MountSpec,
    Resources,
    RestartPolicy,
    Ulimit,
)
from carte.api.stacks import REPLICA_LABEL, REVISION_LABEL, SERVICE_LABEL, STACK_LABEL
from carte.stack import normalize
from carte.stack.model import Deploy, FileRef, NetworkAttach, Service, VolumeLong


def image_name(stack: str, name: str, service: Service) -> str:
    """The image replicas run: `image`, else the one `build` makes (`<stack>_<service>`)."""
    return service.image or f"{stack}_{name}"


def network_name(stack: str, network: str) -> str:
    return f"{stack}_{network}"


def template(service: Service) -> bytes:
    """What replaces replicas when it changes: everything but the replica count, autoscale
    bounds, update/rollback settings and resource limits (applied live)."""
    deploy = msgspec.structs.replace(
        service.deploy,
        replicas=0,
        resources=Deploy().resources,
        update_config=Deploy().update_config,
        rollback_config=Deploy().rollback_config,
    )
    x_carte = msgspec.structs.replace(service.x_carte, autoscale=None)
    kept = msgspec.structs.replace(service, deploy=deploy, x_carte=x_carte)
    # through JSON once, so a spec read back from the store compares equal to a fresh one
    return msgspec.json.encode(msgspec.json.decode(msgspec.json.encode(kept), type=Service))


def resources(service: Service) -> Resources:
    """deploy.resources.limits, else the older top-level mem_limit, cpus, pids_limit; and
    ulimits."""
    limits = service.deploy.resources.limits
    return Resources(
        memory=normalize.size_bytes(limits.memory or service.mem_limit),
        nano_cpus=normalize.nano_cpus(limits.cpus or service.cpus),
        pids_limit=limits.pids or service.pids_limit,
        ulimits=[
            Ulimit(name=name, soft=_limit(value), hard=_limit(value))
            if isinstance(value, int)
            else Ulimit(name=name, soft=_limit(value.soft), hard=_limit(value.hard))
            for name, value in service.ulimits.items()
        ],
    )


def _limit(value: int) -> int:
    """A ulimit value; -1 (Compose's "unlimited") as the runtime's infinity."""
    return value if value >= 0 else 2**64 - 1


def file_mounts(service: Service, files_dir: str) -> list[MountSpec]:
    """The service's secrets (at /run/secrets/NAME or their target) and configs (at /NAME or
    their target), bound read-only from the files the stacks handler wrote in `files_dir`
    (see `file_refs`)."""
    return [
        MountSpec(
            type="bind",
            source=os.path.join(files_dir, kind, name),
            target=target,
            read_only=True,
        )
        for kind, name, target, _mode, _uid, _gid in file_refs(service)
    ]


def file_refs(service: Service) -> list[tuple[str, str, str, int, int, int]]:
    """(kind, name, target, mode, uid, gid) of each secret and config the service uses, with
    Compose's defaults (mode 0444, owner root)."""
    out = []
    for kind, refs in (("secrets", service.secrets), ("configs", service.configs)):
        for ref in refs:
            ref = ref if isinstance(ref, FileRef) else FileRef(source=ref)
            target = ref.target or ref.source
            if not target.startswith("/"):
                target = f"/run/secrets/{target}" if kind == "secrets" else f"/{target}"
            mode = ref.mode if ref.mode is not None else 0o444
            out.append(
                (
                    kind,
                    ref.source,
                    target,
                    mode if isinstance(mode, int) else int(mode, 8),
                    int(ref.uid or 0),
                    int(ref.gid or 0),
                )
            )
    return out


def volume_mounts(
    stack: str, service: Service, project_dir: str, names: dict[str, str] | None = None
) -> list[MountSpec]:
    """The service's volumes and tmpfs mounts (what `volumes_from` of another service takes)."""
    mounts = [_mount(stack, item, project_dir, names or {}) for item in service.volumes]
    for entry in normalize.strings(service.tmpfs):
        target, _, options = entry.partition(":")
        size = 0
        for option in options.split(","):
            key, _, value = option.partition("=")
            if key == "size" and value:
                size = normalize.size_bytes(value)
        mounts.append(MountSpec(type="tmpfs", target=target, tmpfs_size=size))
    return mounts


def network_mode(service: Service, joined: str = "") -> str:
    """The container network of `network_mode` ("" when the service uses networks);
    `joined` is the container that `service:NAME` resolved to."""
    mode = service.network_mode
    if mode in ("none", "host") or mode.startswith("container:"):
        return mode
    if mode.startswith("service:"):
        return f"container:{joined}"
    return ""


def replica_aliases(name: str, replica: int, network: str, attach: NetworkAttach) -> list[str]:
    """The DNS names of a replica on one of its networks: `tasks.NAME`, `NAME_N`, its
    aliases, and on networks other than the stack's default the service name itself (on the
    default network that name is the service's VIP)."""
    own = [] if network == "default" else [name]
    return [f"tasks.{name}", f"{name}_{replica}", *own, *attach.aliases]


def file_env(service: Service, env_files: dict[str, str]) -> dict[str, str | None]:
    """The variables the service's env_file entries set, a later file winning over an
    earlier one; `env_files` maps each path to its text."""
    from carte.stack.interpolate import parse_dotenv

    env: dict[str, str | None] = {}
    for path in normalize.strings(service.env_file):
        env.update(parse_dotenv(env_files.get(path, "")))
    return env


def container_name(stack: str, name: str, service: Service, replica: int) -> str:
    return service.container_name or f"{stack}_{name}_{replica}-{secrets.token_hex(2)}"


def replica_config(
    *,
    stack: str,
    name: str,
    service: Service,
    replica: int,
    revision: int,
    project_dir: str,
    env_files: dict[str, str],
    files_dir: str = "",
    shared_mounts: list[MountSpec] | None = None,
    network_names: dict[str, str] | None = None,
    volume_names: dict[str, str] | None = None,
    joined: str = "",
    ipc_joined: str = "",
) -> ContainerConfig:
    """The config of replica `replica` of `name` at `revision`. `env_files` maps each env_file
    path to its text (the caller reads them); `files_dir` holds the service's secrets and
    configs (`file_mounts`); `shared_mounts` are those `volumes_from` takes (the caller
    resolves them); `network_names`/`volume_names` map the manifest's names to the daemon's
    (default: `<stack>_<name>`); `joined` is the container id `network_mode: service:NAME`
    resolved to, `ipc_joined` the one `ipc: service:NAME` did. Restart is "no": the stacks
    handler heals."""
    env = file_env(service, env_files)
    env.update(normalize.mapping(service.environment))
    labels = {k: v or "" for k, v in normalize.mapping(service.labels).items()}
    labels.update(
        {
            STACK_LABEL: stack,
            SERVICE_LABEL: name,
            REPLICA_LABEL: str(replica),
            REVISION_LABEL: str(revision),
        }
    )
    networks = normalize.networks(service)
    first = "default" if "default" in networks else next(iter(networks))
    mode = network_mode(service, joined)
    mounts = volume_mounts(stack, service, project_dir, volume_names)
    targets = {m.target for m in mounts}
    mounts += [m for m in shared_mounts or [] if m.target not in targets]
    mounts += file_mounts(service, files_dir) if files_dir else []
    logging = service.logging.options
    return ContainerConfig(
        image=image_name(stack, name, service),
        name=container_name(stack, name, service, replica),
        cmd=normalize.words(service.command),
        entrypoint=normalize.words(service.entrypoint),
        env=[f"{k}={v}" for k, v in env.items() if v is not None],
        workdir=service.working_dir,
        user=service.user,
        hostname=service.hostname,
        labels=labels,
        tty=service.tty,
        open_stdin=service.stdin_open,
        mounts=mounts,
        resources=resources(service),
        cap_add=list(service.cap_add),
        cap_drop=list(service.cap_drop),
        security_opt=list(service.security_opt),
        init=service.init,
        read_only=service.read_only,
        restart=RestartPolicy(name="no"),
        stop_signal=service.stop_signal,
        stop_timeout=(
            int(normalize.seconds(service.stop_grace_period))
            if service.stop_grace_period is not None
            else None
        ),
        healthcheck=_healthcheck(service),
        network=mode or (network_names or {}).get(first) or network_name(stack, first),
        network_aliases=[] if mode else replica_aliases(name, replica, first, networks[first]),
        ip="" if mode else networks[first].ipv4_address,
        sysctls={k: v or "" for k, v in normalize.mapping(service.sysctls).items()},
        extra_hosts=normalize.extra_hosts(service),
        dns=normalize.strings(service.dns),
        dns_search=normalize.strings(service.dns_search),
        mac_address="" if mode else service.mac_address,
        ipc_mode=f"container:{ipc_joined}" if service.ipc.startswith("service:") else service.ipc,
        pid_mode=service.pid,
        shm_size=normalize.size_bytes(service.shm_size),
        group_add=[str(group) for group in service.group_add],
        domainname=service.domainname,
        log=LogOptions(
            max_size=normalize.size_bytes(logging["max-size"]) if "max-size" in logging else None,
            max_file=int(logging["max-file"]) if "max-file" in logging else None,
        ),
    )


def _healthcheck(service: Service) -> HealthConfig | None:
    check = service.healthcheck
    if check is None:
        return None
    if check.disable:
        return HealthConfig(test=["NONE"])
    test = ["CMD-SHELL", check.test] if isinstance(check.test, str) else list(check.test)
    if not test:
        return None
    return HealthConfig(
        test=test,
        interval=normalize.seconds(check.interval),
        timeout=normalize.seconds(check.timeout),
        retries=check.retries,
        start_period=normalize.seconds(check.start_period),
        start_interval=normalize.seconds(check.start_interval) if check.start_period else 0.0,
    )


def _mount(
    stack: str, item: str | VolumeLong, project_dir: str, names: dict[str, str]
) -> MountSpec:
    if isinstance(item, str):
        parts = item.split(":")
        read_only = len(parts) == 3 and "ro" in parts[2].split(",")
        if len(parts) == 1:
            return MountSpec(type="volume", target=parts[0])
        item = VolumeLong(
            type="bind" if parts[0].startswith((".", "/", "~")) else "volume",
            source=parts[0],
            target=parts[1],
            read_only=read_only,
        )
    source = item.source
    if item.type == "bind":
        source = os.path.normpath(os.path.join(project_dir, os.path.expanduser(source)))
    elif item.type == "volume" and source:
        source = names.get(source) or f"{stack}_{source}"
    return MountSpec(type=item.type, source=source, target=item.target, read_only=item.read_only)
