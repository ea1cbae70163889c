"""The stacks handler's cluster seam: on a control plane a service's replicas are not
created here but handed to the cluster's scheduler (`PlaceService`), which assigns them to
nodes whose agents run them.

`cluster_replicas` lists what the nodes run for a service (`ListReplicas` on a control
plane). `place_in_cluster` answers False on a daemon that is not a control plane (or whose
scheduler handler is not running): the converger then runs the replicas locally.
`follow_cluster_rollout` turns the scheduler's view of a rolling update into the service's
`Rollout` (progress, completed, rolled back; on failure roll back or pause, as on one
machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from carte.api.cluster import FileContent, ServiceFile, ServicePlacement
from carte.api.errors import Unavailable
from carte.api.events import ClusterRolloutChanged, ListPlacements, PlaceService
from carte.api.stacks import ReplicaSummary
from carte.handlers.stacks._records import ServiceRecord, load_service
from carte.stack import image_name, normalize, replica_config
from carte.stack.model import Service
from carte.stack.replica import file_refs

if TYPE_CHECKING:
    from carte.engine import HandlerContext
    from carte.handlers.stacks._converge import Converger


async def place_in_cluster(
    ctx: HandlerContext, stack: str, service: str, record: ServiceRecord | None
) -> bool:
    """Hand the service (None: removed) to the scheduler; True when a control plane took it."""
    placement = (
        ServicePlacement(stack=stack, service=service, revision=0, replicas=0)
        if record is None
        else service_placement(record)
    )
    try:
        return await ctx.bus.request(PlaceService(placement=placement, remove=record is None))
    except Unavailable:
        return False  # no scheduler handler here: a single machine


async def cluster_replicas(ctx: HandlerContext, record: ServiceRecord) -> list[ReplicaSummary]:
    """On a control plane: the replicas the cluster's nodes run for the service, each with
    its node and what its agent reports (pending ones with the reason); [] elsewhere."""
    try:
        placed = await ctx.bus.request(ListPlacements(stack=record.stack, service=record.name))
    except Unavailable:
        return []  # no scheduler handler here: a single machine
    image = image_name(record.stack, record.name, record.spec)
    return [
        ReplicaSummary(
            stack=p.stack,
            service=p.service,
            replica=p.replica,
            revision=int(p.revision or 0),
            container_id=p.container_id,
            name=p.name,
            image=image,
            status=p.status,
            ready=p.ready,
            ip=p.ip,
            node=p.node,
        )
        for p in placed
    ]


def service_files(record: ServiceRecord) -> list[FileContent]:
    """The content of each secret and config the service mounts (`ReadServiceFiles`)."""
    return [
        FileContent(kind=kind, name=name, content=record.files.get(f"{kind}/{name}", b""))
        for kind, name, *_ in file_refs(record.spec)
    ]


async def follow_cluster_rollout(converger: Converger, fact: ClusterRolloutChanged) -> None:
    """Bring the service's rollout up to the scheduler's (a fact about another revision, or
    about a rollout that already ended, changes nothing)."""
    cluster = fact.rollout
    record = await load_service(converger.ctx.store, cluster.stack, cluster.service)
    if record is None or record.revision != cluster.revision or record.rollout is None:
        return
    rollout = record.rollout
    if rollout.state not in ("progressing", "rolling_back"):
        return
    rolling_back = rollout.state == "rolling_back"
    if cluster.state == "failed":
        deploy = record.spec.deploy
        config = deploy.rollback_config if rolling_back else deploy.update_config
        await converger.fail(record, rollout, cluster.message, config, rolling_back)
    elif cluster.state == "completed":
        final = "rolled_back" if rolling_back else "completed"
        done = msgspec.structs.replace(rollout, state=final, updated=cluster.updated)
        await converger.save_rollout(record, done)
    elif cluster.updated != rollout.updated:
        moved = msgspec.structs.replace(rollout, updated=cluster.updated)
        await converger.save_rollout(record, moved)
    converger.kick(cluster.stack, cluster.service)


def service_placement(record: ServiceRecord) -> ServicePlacement:
    """What the scheduler needs of a service: replicas, reservations, constraints, how to
    roll out a new revision (update_config, or rollback_config while rolling back; paused
    once the rollout paused or failed) and the CreateContainer config of each replica."""
    spec = record.spec
    rollout = record.rollout
    rolling_back = rollout is not None and rollout.state == "rolling_back"
    update = spec.deploy.rollback_config if rolling_back else spec.deploy.update_config
    reservations = spec.deploy.resources.reservations
    placement = spec.deploy.placement
    unplaceable = ""
    joins, mounts_from = _colocated(spec)
    if spec.network_mode.startswith("container:") or any(
        entry.startswith("container:") for entry in spec.volumes_from
    ):
        unplaceable = "network_mode and volumes_from container:NAME name a container of one node"
    if spec.ipc.partition(":")[0] in ("service", "container"):
        unplaceable = "ipc service:NAME and container:NAME are not placed in a cluster yet"
    cpus, memory = 0.0, 0
    try:
        cpus = normalize.nano_cpus(str(reservations.get("cpus", 0))) / 1e9
        memory = normalize.size_bytes(_size(reservations.get("memory", 0)))
    except ValueError as error:
        unplaceable = f"deploy.resources.reservations: {error}"
    requests = []
    for number in range(1, record.replicas + 1):
        config = replica_config(
            stack=record.stack,
            name=record.name,
            service=spec,
            replica=number,
            revision=record.revision,
            project_dir=record.project_dir,
            env_files=record.env_files,
            network_names=record.networks,
            volume_names=record.volumes,
        )
        # one name per replica across passes and nodes (a local replica's has a random suffix)
        name = spec.container_name or f"{record.stack}_{record.name}_{number}"
        requests.append(msgspec.to_builtins(msgspec.structs.replace(config, name=name)))
    return ServicePlacement(
        stack=record.stack,
        service=record.name,
        revision=record.revision,
        replicas=record.replicas,
        cpus=cpus,
        memory=memory,
        constraints=list(placement.constraints),
        max_per_node=placement.max_replicas_per_node,
        parallelism=update.parallelism,
        delay=normalize.seconds(update.delay),
        order="stop-first" if spec.container_name else update.order,  # one name: old first
        monitor=normalize.seconds(update.monitor),
        failure_action=update.failure_action,
        max_failure_ratio=update.max_failure_ratio,
        paused=rollout is not None and rollout.state in ("paused", "failed"),
        colocate=sorted({joins, *(entry.partition(":")[0] for entry in mounts_from)} - {""}),
        joins=joins,
        mounts_from=mounts_from,
        files=[
            ServiceFile(kind=kind, name=name, target=target, mode=mode, uid=uid, gid=gid)
            for kind, name, target, mode, uid, gid in file_refs(spec)
        ],
        restart=_condition(normalize.restart_policy(spec)[0]),
        requests=requests,
        unplaceable=unplaceable,
    )


def _colocated(spec: Service) -> tuple[str, list[str]]:
    """The service whose network it joins (network_mode service:NAME) and the services whose
    mounts it takes (volumes_from NAME / service:NAME, with :ro)."""
    kind, _, joined = spec.network_mode.partition(":")
    mounts_from = []
    for entry in spec.volumes_from:
        parts = entry.split(":")
        if parts[0] == "container":
            continue
        name = parts[1] if parts[0] == "service" and len(parts) > 1 else parts[0]
        mounts_from.append(f"{name}:ro" if parts[-1] == "ro" else name)
    return (joined if kind == "service" else ""), mounts_from


def _condition(name: str) -> Literal["none", "on-failure", "any"]:
    return "none" if name == "none" else "on-failure" if name == "on-failure" else "any"


def _size(value: object) -> str | int:
    return value if isinstance(value, int) else str(value)
