"""A service of a manifest as the container config of one replica, and the parts of a service
that decide whether its replicas must be replaced."""

import os
import secrets

import msgspec

from carte.api.containers import (
    ContainerConfig,
    HealthConfig,
    MountSpec,
    Resources,
    RestartPolicy,
)
from carte.api.stacks import REPLICA_LABEL, REVISION_LABEL, SERVICE_LABEL, STACK_LABEL
from carte.stack import normalize
from carte.stack.model import Deploy, Service, VolumeLong


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
    limits = service.deploy.resources.limits
    return Resources(
        memory=normalize.size_bytes(limits.memory),
        nano_cpus=normalize.nano_cpus(limits.cpus),
        pids_limit=limits.pids,
    )


def replica_config(
    *,
    stack: str,
    name: str,
    service: Service,
    replica: int,
    revision: int,
    project_dir: str,
    env_files: dict[str, str],
) -> ContainerConfig:
    """The config of replica `replica` of `name` at `revision`. `env_files` maps each env_file
    path to its text (the caller reads them). Restart is "no": the stacks handler heals."""
    env: dict[str, str | None] = {}
    files = [service.env_file] if isinstance(service.env_file, str) else service.env_file
    from carte.stack.interpolate import parse_dotenv

    for path in files:
        env.update(parse_dotenv(env_files.get(path, "")))
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
    return ContainerConfig(
        image=image_name(stack, name, service),
        name=f"{stack}_{name}_{replica}-{secrets.token_hex(2)}",
        cmd=normalize.words(service.command),
        entrypoint=normalize.words(service.entrypoint),
        env=[f"{k}={v}" for k, v in env.items() if v is not None],
        workdir=service.working_dir,
        user=service.user,
        hostname=service.hostname,
        labels=labels,
        mounts=[_mount(stack, item, project_dir) for item in service.volumes],
        resources=resources(service),
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
        network=network_name(stack, first),
        network_aliases=[f"tasks.{name}", f"{name}_{replica}", *networks[first].aliases],
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
    )


def _mount(stack: str, item: str | VolumeLong, project_dir: str) -> MountSpec:
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
        source = f"{stack}_{source}"
    return MountSpec(type=item.type, source=source, target=item.target, read_only=item.read_only)
