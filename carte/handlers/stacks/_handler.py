"""The stacks handler: Compose files applied as stacks, kept converged.

`ApplyStack` checks the whole file first (nothing changes on bad input), builds images that
`build:` asks for, makes the stack's networks, stores the desired state and wakes one
converging task per service (`_converge.Converger`). Replicas that exit or turn unhealthy
are replaced per the restart policy; a changed service rolls out per its update_config.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from functools import partial
from pathlib import Path

import msgspec
import trio

from carte.api.cluster import FileContent
from carte.api.errors import CarteError, Conflict, InvalidArgument, NotFound, Unavailable
from carte.api.events import (
    ApplyStack,
    BuildImage,
    ClusterRolloutChanged,
    ContainerExited,
    ContainerRemoved,
    ContainerStarted,
    CreateNetwork,
    CreateVolume,
    GetClusterStatus,
    GetRollout,
    GetServiceAddress,
    HealthChanged,
    InspectContainer,
    InspectImage,
    InspectService,
    InspectVolume,
    ListNetworks,
    ListReplicas,
    ListRevisions,
    ListServices,
    ListStacks,
    ReadServiceFiles,
    RemoveNetwork,
    RemoveStack,
    RemoveVolume,
    ScaleService,
    ServiceRemoved,
    StackRemoved,
    UndoRollout,
    UpdateContainer,
    UpdateServiceResources,
)
from carte.api.images import BuildRequest
from carte.api.networks import Network
from carte.api.stacks import (
    STACK_LABEL,
    Plan,
    PlanAction,
    ReplicaSummary,
    RevisionSummary,
    Rollout,
    ServiceDetails,
    ServiceSummary,
    StackSummary,
)
from carte.api.timestamps import now_rfc3339, parse_rfc3339
from carte.engine import Handler, HandlerContext, on
from carte.handlers.stacks._cluster import (
    cluster_replicas,
    follow_cluster_rollout,
    service_files,
)
from carte.handlers.stacks._converge import (
    Converger,
    autoscale_spec,
    live_changes,
    published_ports,
    service_updated,
)
from carte.handlers.stacks._files import read_files
from carte.handlers.stacks._options import StacksOptions
from carte.handlers.stacks._policies import sync_policies
from carte.handlers.stacks._records import (
    KEPT_REVISIONS,
    Revision,
    ServiceRecord,
    StackRecord,
    load_service,
    load_services,
    load_stacks,
    service_key,
    stack_key,
)
from carte.handlers.stacks._replicas import replica_number, revision_of
from carte.stack import (
    ManifestError,
    Source,
    image_name,
    load_manifest,
    network_name,
    normalize,
    parse_dotenv,
    resources,
    start_order,
    template,
)
from carte.stack.model import Build, FileRef, IpamPool, Manifest, NetworkDecl, Service
from carte.stack.replica import file_env, file_refs

_STACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class StacksHandler(Handler):
    """Stacks, services, replicas and rollouts."""

    name = "stacks"
    requires = ("containers", "network")
    Options = StacksOptions
    section = "stacks"

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self._converger: Converger | None = None
        self._ready = trio.Event()
        self._apply_lock = trio.Lock()
        self._restarted: dict[str, tuple[str, str]] = {}
        """Replicas a user's restart stopped (container id -> stack, service), until they run."""
        self._started = time.time()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Converge every stored service until cancelled (replicas keep running)."""
        async with trio.open_nursery() as nursery:
            self._converger = Converger(self.ctx, nursery, self._apply_lock)
            for record in await load_services(self.ctx.store):
                await self._publish_updated(record)
                self._converger.ensure_loop(record.stack, record.name)
            self._ready.set()
            task_status.started()
            nursery.start_soon(self._remove_orphan_networks)
            await trio.sleep_forever()

    async def _conv(self) -> Converger:
        await self._ready.wait()
        assert self._converger is not None
        return self._converger

    # --- facts from the containers and health handlers ----------------------------------

    @on(ContainerExited)
    @on(ContainerRemoved)
    async def replica_ended(self, fact: ContainerExited | ContainerRemoved) -> None:
        converger = await self._conv()
        if isinstance(fact, ContainerRemoved) and (key := converger.stopped.pop(fact.id, None)):
            converger.kick(*key)  # a stopped replica removed: replaced
        replica = converger.replicas.get(fact.id)
        if replica is None:
            return
        why = "exited" if isinstance(fact, ContainerExited) else "removed"
        await converger.untrack(fact.id, f"replica {fact.name} {why}")
        if isinstance(fact, ContainerExited) and await self._restarting(fact.id):
            # `carte restart`: the same container comes back; tracked again once it runs
            self._restarted[fact.id] = (replica.stack, replica.service)
            return
        if isinstance(fact, ContainerExited) and fact.requested:
            # a user's stop (`compose stop`): kept stopped, as Compose keeps the container
            converger.stopped[fact.id] = (replica.stack, replica.service)
            return
        converger.kick(replica.stack, replica.service)

    async def _restarting(self, container_id: str) -> bool:
        """Whether an exit was a restart's (the container reads restarting, or runs again)."""
        try:
            details = await self.ctx.bus.request(InspectContainer(ref=container_id))
        except CarteError:
            return False
        return details.state.status in ("restarting", "running")

    @on(ContainerStarted)
    async def replica_restarted(self, fact: ContainerStarted) -> None:
        converger = await self._conv()
        key = self._restarted.pop(fact.id, None) or converger.stopped.pop(fact.id, None)
        if key is not None:
            converger.kick(*key)

    @on(HealthChanged)
    async def replica_health(self, fact: HealthChanged) -> None:
        converger = await self._conv()
        replica = converger.replicas.get(fact.id)
        if replica is None:
            return
        record = await load_service(self.ctx.store, replica.stack, replica.service)
        if record is not None and record.spec.x_carte.readiness is None:
            if fact.status == "healthy":
                await converger.set_ready(replica, True, "")
            elif fact.status == "unhealthy":
                await converger.set_ready(replica, False, f"unhealthy: {fact.output.strip()}")
        if fact.status == "unhealthy":
            converger.kick(replica.stack, replica.service)

    @on(ClusterRolloutChanged)
    async def cluster_rollout(self, fact: ClusterRolloutChanged) -> None:
        await follow_cluster_rollout(await self._conv(), fact)

    @on(ReadServiceFiles)
    async def read_service_files(self, command: ReadServiceFiles) -> list[FileContent]:
        return service_files(await self._record(command.stack, command.service))

    # --- apply ---------------------------------------------------------------------------

    @on(ApplyStack)
    async def apply(self, command: ApplyStack) -> Plan:
        """Check, plan and (unless dry_run) store and converge. Bad input raises
        `InvalidArgument` before anything changed; a failed build leaves the stored state as
        it was."""
        converger = await self._conv()
        project_dir = command.project_dir or os.getcwd()
        dotenv = await trio.to_thread.run_sync(_read_dotenv, project_dir)
        env = {**dotenv, **command.env}
        try:
            manifest, source, warnings = await trio.to_thread.run_sync(  # big files: off the loop
                partial(
                    load_manifest,
                    command.manifest,
                    command.file_name,
                    env,
                    project_dir=project_dir,
                    profiles=list(command.profiles),
                    ceilings=self.ctx.options.ceilings,
                )
            )
        except ManifestError as error:
            raise InvalidArgument(str(error)) from None
        # Compose's order: the -n flag, the file's top-level name:, the directory's name
        stack = command.name or manifest.name or _directory_name(project_dir)
        if not _STACK_NAME.fullmatch(stack):
            raise InvalidArgument(
                f'stack name "{stack}" is invalid; use up to 40 lowercase letters, digits, "_" '
                'and "-" (carte apply -n NAME)'
            )
        warnings = [*warnings, *await trio.to_thread.run_sync(_unreachable_ports, manifest)]
        for warning in warnings:
            self.ctx.log.warning("stack %s: %s", stack, warning)
        env_files = await trio.to_thread.run_sync(_read_env_files, project_dir, manifest)
        files = await trio.to_thread.run_sync(read_files, project_dir, manifest, source, env)
        for name, service in manifest.services.items():
            if service.build is None:
                await self._check_image(name, service.image)
        await self._check_externals(stack, manifest, source)
        async with self._apply_lock:
            stored = {r.name: r for r in await load_services(self.ctx.store, stack)}
            plan = await self._plan(stack, manifest, stored, files, env_files)
            plan = msgspec.structs.replace(plan, warnings=warnings)
            if command.dry_run:
                return msgspec.structs.replace(plan, dry_run=True)
            for name, service in manifest.services.items():
                if isinstance(service.build, str | Build) and _builds(plan, name):
                    await self._build(stack, name, service, project_dir, files)
            declared = _declared_networks(stack, manifest)
            made: list[str] = []
            try:
                for action in plan.actions:
                    if action.kind == "network" and action.action == "create":
                        if await self._create_network(
                            stack, action.name, declared.get(action.name)
                        ):
                            made.append(action.name)
                await sync_policies(self.ctx.bus, network_name(stack, "default"), manifest)
                await self._create_volumes(stack, manifest)
            except BaseException:
                # nothing half made: the networks this apply made go with its refusal
                with trio.CancelScope(shield=True):
                    for network in reversed(made):
                        try:
                            await self.ctx.bus.request(RemoveNetwork(name=network))
                        except CarteError as error:
                            self.ctx.log.warning("stack %s: network %s: %s", stack, network, error)
                raise
            records = self._records(stack, manifest, stored, project_dir, env_files, files)
            for record in records:
                record.compose_restart = True
                old_record = stored.get(record.name)
                record.random_ports = await trio.to_thread.run_sync(
                    _pick_ports, record.spec, old_record.random_ports if old_record else {}
                )
                record.networks = network_map(stack, manifest)
                record.volumes = volume_map(stack, manifest)
                record.files = _files_of(record.spec, files)
            stack_record = StackRecord(
                name=stack,
                file_name=command.file_name,
                project_dir=project_dir,
                services=list(manifest.services),
                networks=_network_names(stack, manifest),
                updated=now_rfc3339(),
            )
            await self.ctx.store.put(stack_key(stack), stack_record)
            for record in records:
                await self.ctx.store.put(service_key(stack, record.name), record)
            for name in stored:
                if name not in manifest.services:
                    await self.ctx.store.delete(service_key(stack, name))
                    await self.ctx.bus.publish(
                        ServiceRemoved(id=f"{stack}_{name}", stack=stack, service=name)
                    )
                    converger.ensure_loop(stack, name)
            for record in records:
                old = stored.get(record.name)
                if old is not None and _limits_changed(old, record):
                    await self._update_limits(record)
                if old is not None and old.revision == record.revision:
                    await converger.start_stopped(stack, record.name)
                await self._publish_updated(record)
                converger.ensure_loop(stack, record.name)
        return plan

    async def _plan(
        self,
        stack: str,
        manifest: Manifest,
        stored: dict[str, ServiceRecord],
        files: dict[str, bytes],
        env_files: dict[str, str],
    ) -> Plan:
        actions: list[PlanAction] = []
        existing = {n.name for n in await self.ctx.bus.request(ListNetworks())}
        for network in _network_names(stack, manifest):
            if network not in existing:
                actions.append(PlanAction(action="create", kind="network", name=network))
        for name in start_order(manifest):
            service = manifest.services[name]
            old = stored.get(name)
            replicas = _replicas(service, old)
            if old is None:
                actions.append(
                    PlanAction(action="create", name=name, detail=f"{replicas} replicas")
                )
            elif _replaced(old, service, files, env_files):
                actions.append(
                    PlanAction(
                        action="replace",
                        name=name,
                        detail=f"revision {old.revision} -> {_next_revision(old)}, "
                        f"{replicas} replicas, {service.deploy.update_config.order}",
                    )
                )
            elif old.replicas != replicas or resources(old.spec) != resources(service):
                detail = f"{old.replicas} -> {replicas} replicas"
                if resources(old.spec) != resources(service):
                    detail += ", new limits (live)"
                actions.append(PlanAction(action="scale", name=name, detail=detail))
            elif live := live_changes(old.spec, service):
                actions.append(PlanAction(action="scale", name=name, detail=live))
            else:
                actions.append(PlanAction(action="unchanged", name=name))
        for name in stored:
            if name not in manifest.services:
                actions.append(PlanAction(action="remove", name=name))
        return Plan(stack=stack, actions=actions)

    def _records(
        self,
        stack: str,
        manifest: Manifest,
        stored: dict[str, ServiceRecord],
        project_dir: str,
        env_files: dict[str, str],
        files: dict[str, bytes],
    ) -> list[ServiceRecord]:
        records = []
        now = now_rfc3339()
        for name, service in manifest.services.items():
            old = stored.get(name)
            replicas = _replicas(service, old)
            if old is None:
                record = ServiceRecord(
                    stack=stack,
                    name=name,
                    revision=1,
                    replicas=replicas,
                    spec=service,
                    project_dir=project_dir,
                    env_files=env_files,
                    revisions=[Revision(revision=1, created=now, spec=service, change="apply")],
                )
            elif _replaced(old, service, files, env_files):
                revision = _next_revision(old)
                record = ServiceRecord(
                    stack=stack,
                    name=name,
                    revision=revision,
                    replicas=replicas,
                    spec=service,
                    project_dir=project_dir,
                    env_files=env_files,
                    revisions=[
                        *old.revisions,
                        Revision(revision=revision, created=now, spec=service, change="apply"),
                    ][-KEPT_REVISIONS:],
                    rollout=Rollout(
                        stack=stack,
                        service=name,
                        revision=revision,
                        from_revision=old.revision,
                        state="progressing",
                        total=replicas,
                    ),
                )
            else:
                record = msgspec.structs.replace(
                    old, replicas=replicas, spec=service, env_files=env_files
                )
            records.append(record)
        return records

    async def _check_image(self, service: str, image: str) -> None:
        """`InvalidArgument` when a service's image is not stored locally."""
        try:
            await self.ctx.bus.request(InspectImage(ref=image))
        except NotFound:
            raise InvalidArgument(
                f'service "{service}": image "{image}" not found locally; pull it '
                f"(carte pull {image}) or give the service a build: key"
            ) from None

    async def _build(
        self, stack: str, name: str, service: Service, project_dir: str, files: dict[str, bytes]
    ) -> None:
        build = (
            service.build if isinstance(service.build, Build) else Build(context=str(service.build))
        )
        args = {k: v or "" for k, v in normalize.mapping(build.args).items()}
        dockerfile = build.dockerfile or "Dockerfile"
        if build.dockerfile_inline:
            # an absolute path: the builder reads it instead of one in the context
            inline = self.ctx.run_root / "stacks" / stack / f"{name}.Dockerfile"
            await trio.to_thread.run_sync(_write_text, inline, build.dockerfile_inline)
            dockerfile = str(inline)
        options = BuildRequest(
            tags=[image_name(stack, name, service)],
            dockerfile=dockerfile,
            build_args=args,
            target=build.target,
            labels={k: v or "" for k, v in normalize.mapping(build.labels).items()},
            no_cache=build.no_cache,
            pull=build.pull,
            network=build.network or "default",
        )
        context = _context_dir(project_dir, build.context)
        secrets = {}
        for ref in build.secrets:
            source = ref.source if isinstance(ref, FileRef) else ref
            target = ref.target if isinstance(ref, FileRef) and ref.target else source
            secrets[target] = files.get(f"secrets/{source}", b"")
        await self.ctx.bus.request(BuildImage(context=context, options=options, secrets=secrets))

    async def _create_network(self, stack: str, name: str, decl: NetworkDecl | None) -> bool:
        """Make the stack's network `name`; False when another apply made it meanwhile."""
        decl = decl or NetworkDecl()
        pool = decl.ipam.config[0] if decl.ipam.config else IpamPool()
        labels = {k: v or "" for k, v in normalize.mapping(decl.labels).items()}
        try:
            await self.ctx.bus.request(
                CreateNetwork(
                    name=name,
                    subnet=pool.subnet,
                    gateway=pool.gateway,
                    internal=decl.internal,
                    labels={**labels, "com.carte.stack": stack},
                    options={k: v or "" for k, v in normalize.mapping(decl.driver_opts).items()},
                )
            )
        except Conflict as error:
            # made meanwhile: it is there, which is all the stack needs; any other conflict
            # (a subnet another network holds) refuses the apply
            if name not in {n.name for n in await self.ctx.bus.request(ListNetworks())}:
                raise InvalidArgument(f"network {name}: {error.message}") from None
            return False
        return True

    async def _in_cluster(self) -> bool:
        try:
            return (await self.ctx.bus.request(GetClusterStatus())).role != "none"
        except Unavailable:
            return False  # no cluster handler here: a single machine

    async def _create_volumes(self, stack: str, manifest: Manifest) -> None:
        """Make the declared volumes with `driver_opts` now (what they mount must be there
        before a replica uses them); the others are made by the first replica that mounts
        them. `InvalidArgument` names the volume for bad options (what this call made is
        removed again)."""
        names = volume_map(stack, manifest)
        made: list[str] = []
        try:
            for key, decl in manifest.volumes.items():
                if decl is None or decl.external or not decl.driver_opts:
                    continue
                if await self._in_cluster():
                    raise InvalidArgument(
                        f'volume "{key}": driver_opts are not carried to a cluster\'s nodes '
                        "yet; use a bind mount (./dir:/path) or a plain volume"
                    )
                options = {k: v or "" for k, v in normalize.mapping(decl.driver_opts).items()}
                labels = {k: v or "" for k, v in normalize.mapping(decl.labels).items()}
                name = names[key]
                existed = True
                try:
                    await self.ctx.bus.request(InspectVolume(name=name))
                except NotFound:
                    existed = False
                try:
                    await self.ctx.bus.request(
                        CreateVolume(
                            name=name,
                            labels={**labels, "com.carte.stack": stack},
                            options=options,
                        )
                    )
                except InvalidArgument as error:
                    raise InvalidArgument(f'volume "{key}": {error.message}') from None
                if not existed:
                    made.append(name)
        except BaseException:
            with trio.CancelScope(shield=True):
                for name in made:
                    try:
                        await self.ctx.bus.request(RemoveVolume(name=name))
                    except CarteError as error:
                        self.ctx.log.warning("stack %s: volume %s: %s", stack, name, error)
            raise

    async def _check_externals(self, stack: str, manifest: Manifest, source: Source) -> None:
        """`InvalidArgument` (every problem, with file and line) for an external network or
        volume that does not exist: a stack uses them, never creates them."""
        problems = []
        existing = {n.name for n in await self.ctx.bus.request(ListNetworks())}
        for key, decl in manifest.networks.items():
            if decl is not None and decl.external and (decl.name or key) not in existing:
                name = decl.name or key
                problems.append(
                    source.error(
                        ("networks", key),
                        f'external network "{name}" does not exist; create it first '
                        f"(carte network create {name})",
                    )
                )
        for key, volume in manifest.volumes.items():
            if volume is not None and volume.external:
                name = volume.name or key
                try:
                    await self.ctx.bus.request(InspectVolume(name=name))
                except NotFound:
                    problems.append(
                        source.error(
                            ("volumes", key),
                            f'external volume "{name}" does not exist; create it first '
                            f"(carte volume create {name})",
                        )
                    )
        if problems:
            raise InvalidArgument("\n".join(str(p) for p in problems))

    async def _publish_updated(self, record: ServiceRecord) -> None:
        await self.ctx.bus.publish(service_updated(record))

    async def _update_limits(self, record: ServiceRecord) -> None:
        converger = await self._conv()
        for row in await converger.rows(record.stack, record.name):
            if row.state == "running":
                try:
                    await self.ctx.bus.request(
                        UpdateContainer(ref=row.id, resources=resources(record.spec))
                    )
                except CarteError as error:
                    self.ctx.log.warning("limits of %s: %s", row.name, error.message)

    # --- remove --------------------------------------------------------------------------

    @on(RemoveStack)
    async def remove(self, command: RemoveStack) -> None:
        """Stop and remove every replica (NotReady first), the stack's networks and its
        desired state. `NotFound` when nothing of the stack exists."""
        converger = await self._conv()
        stack = command.name
        async with self._apply_lock:
            entry = await self.ctx.store.get(stack_key(stack))
            records = await load_services(self.ctx.store, stack)
            labelled = [n.name for n in await self._labelled_networks() if _owner(n) == stack]
            if entry is None and not records and not labelled:
                raise NotFound(f'stack "{stack}" not found; see carte stack ls')
            for record in records:
                await self.ctx.store.delete(service_key(stack, record.name))
            await self.ctx.store.delete(stack_key(stack))
            converger.stop_loops(stack)
            async with trio.open_nursery() as nursery:
                for record in records:
                    for row in await converger.rows(stack, record.name):
                        nursery.start_soon(converger.retire, row.id, "stack removed")
            for record in records:
                await self.ctx.bus.publish(
                    ServiceRemoved(id=f"{stack}_{record.name}", stack=stack, service=record.name)
                )
            await trio.to_thread.run_sync(
                partial(shutil.rmtree, self.ctx.run_root / "stacks" / stack, ignore_errors=True)
            )
            networks = entry.decode(StackRecord).networks if entry is not None else []
            for network in sorted({*networks, *labelled}):  # labelled: an apply cut short
                try:
                    await self.ctx.bus.request(RemoveNetwork(name=network))
                except (NotFound, Conflict) as error:
                    self.ctx.log.warning("stack %s: network %s: %s", stack, network, error)
            await self.ctx.bus.publish(StackRemoved(id=stack, stack=stack))

    async def _labelled_networks(self) -> list[Network]:
        return [n for n in await self.ctx.bus.request(ListNetworks()) if _owner(n)]

    async def _remove_orphan_networks(self) -> None:
        """Remove the networks labelled with a stack that has no record: an apply makes its
        networks before it stores the stack, so a daemon killed in between left them. Only
        networks made before this handler started (an apply of this handler holds the lock)."""
        async with self._apply_lock:
            try:
                networks = await self._labelled_networks()
            except CarteError as error:
                self.ctx.log.warning("stack networks not checked: %s", error.message)
                return
            stacks = {s.name for s in await load_stacks(self.ctx.store)}
            stacks |= {r.stack for r in await load_services(self.ctx.store)}
            for network in networks:
                if _owner(network) in stacks or parse_rfc3339(network.created) > self._started:
                    continue
                try:
                    await self.ctx.bus.request(RemoveNetwork(name=network.name))
                except CarteError as error:
                    self.ctx.log.warning(
                        "network %s of no stack (%s) kept: %s",
                        network.name,
                        _owner(network),
                        error.message,
                    )
                    continue
                self.ctx.log.warning(
                    "removed network %s: its stack %s has no record (an apply cut short)",
                    network.name,
                    _owner(network),
                )

    # --- queries -------------------------------------------------------------------------

    @on(ListStacks)
    async def list_stacks(self, command: ListStacks) -> list[StackSummary]:
        return [
            StackSummary(
                name=s.name, services=len(s.services), file_name=s.file_name, updated=s.updated
            )
            for s in await load_stacks(self.ctx.store)
        ]

    @on(ListServices)
    async def list_services(self, command: ListServices) -> list[ServiceSummary]:
        converger = await self._conv()
        out = []
        for record in await load_services(self.ctx.store, command.stack):
            rows = await converger.rows(record.stack, record.name)
            running = [r for r in rows if r.state == "running"]
            ready = [r for r in running if (x := converger.replicas.get(r.id)) and x.ready]
            out.append(
                ServiceSummary(
                    stack=record.stack,
                    name=record.name,
                    image=image_name(record.stack, record.name, record.spec),
                    desired=record.replicas,
                    running=len(running),
                    ready=len(ready),
                    revision=record.revision,
                    ports=published_ports(record),
                    autoscale=autoscale_spec(record.spec),
                    rollout=record.rollout.state if record.rollout is not None else "",
                )
            )
        return out

    @on(ListReplicas)
    async def list_replicas(self, command: ListReplicas) -> list[ReplicaSummary]:
        converger = await self._conv()
        records = await load_services(self.ctx.store, command.stack)
        if command.service:
            records = [r for r in records if r.name == command.service]
            if not records:
                raise NotFound(f'service "{command.stack}_{command.service}" not found')
        out = []
        for record in records:
            for row in sorted(await converger.rows(record.stack, record.name), key=replica_number):
                replica = converger.replicas.get(row.id)
                out.append(
                    ReplicaSummary(
                        stack=record.stack,
                        service=record.name,
                        replica=replica_number(row),
                        revision=revision_of(row),
                        container_id=row.id,
                        name=row.name,
                        image=row.image,
                        status=row.status,
                        ready=replica is not None and replica.ready,
                        ip=replica.ip if replica is not None else "",
                    )
                )
            out.extend(await cluster_replicas(self.ctx, record))  # on a control plane
        return out

    async def _record(self, stack: str, service: str) -> ServiceRecord:
        record = await load_service(self.ctx.store, stack, service)
        if record is None:
            raise NotFound(
                f'service "{service}" of stack "{stack}" not found; see carte service ls'
            )
        return record

    async def _vip(self, stack: str, service: str) -> str:
        try:
            return await self.ctx.bus.request(GetServiceAddress(stack=stack, service=service))
        except CarteError:  # the services handler is down or disabled: no VIP to show
            return ""

    @on(InspectService)
    async def inspect(self, command: InspectService) -> ServiceDetails:
        record = await self._record(command.stack, command.service)
        replicas = await self.list_replicas(
            ListReplicas(stack=command.stack, service=command.service)
        )
        return ServiceDetails(
            stack=record.stack,
            name=record.name,
            revision=record.revision,
            spec=msgspec.to_builtins(record.spec),
            replicas=replicas,
            rollout=record.rollout,
            vip=await self._vip(record.stack, record.name),
        )

    # --- changes -------------------------------------------------------------------------

    @on(ScaleService)
    async def scale(self, command: ScaleService) -> None:
        if command.replicas < 0:
            raise InvalidArgument(f"replica count {command.replicas} is below 0; use 0 or more")
        ceiling = self.ctx.options.max_replicas
        if command.replicas > ceiling:
            raise InvalidArgument(
                f"replica count {command.replicas} is above the ceiling of {ceiling} "
                "(stacks.max_replicas in carte.yaml); use fewer or raise the ceiling"
            )
        converger = await self._conv()
        async with self._apply_lock:
            record = await self._record(command.stack, command.service)
            record.replicas = command.replicas
            await self.ctx.store.put(service_key(record.stack, record.name), record)
        await self._publish_updated(record)
        converger.ensure_loop(record.stack, record.name)

    @on(UpdateServiceResources)
    async def update_resources(self, command: UpdateServiceResources) -> None:
        async with self._apply_lock:
            record = await self._record(command.stack, command.service)
            limits = record.spec.deploy.resources.limits
            new = command.resources
            limits = msgspec.structs.replace(
                limits,
                cpus=new.nano_cpus / 1e9 if new.nano_cpus else limits.cpus,
                memory=new.memory or limits.memory,
                pids=new.pids_limit or limits.pids,
            )
            deploy = record.spec.deploy
            spec = msgspec.structs.replace(
                record.spec,
                deploy=msgspec.structs.replace(
                    deploy, resources=msgspec.structs.replace(deploy.resources, limits=limits)
                ),
            )
            record.spec = spec
            await self.ctx.store.put(service_key(record.stack, record.name), record)
        await self._update_limits(record)
        await self._publish_updated(record)

    @on(GetRollout)
    async def rollout_status(self, command: GetRollout) -> Rollout:
        record = await self._record(command.stack, command.service)
        return record.rollout or Rollout(
            stack=record.stack, service=record.name, revision=record.revision, state="idle"
        )

    @on(ListRevisions)
    async def history(self, command: ListRevisions) -> list[RevisionSummary]:
        record = await self._record(command.stack, command.service)
        return [
            RevisionSummary(
                revision=kept.revision,
                created=kept.created,
                image=image_name(record.stack, record.name, kept.spec),
                change=kept.change,
                current=kept.revision == record.revision,
            )
            for kept in record.revisions
        ]

    @on(UndoRollout)
    async def undo(self, command: UndoRollout) -> Rollout:
        """Roll back to `to_revision` (0: the one before the current) as a new revision."""
        converger = await self._conv()
        async with self._apply_lock:
            record = await self._record(command.stack, command.service)
            earlier = [r.revision for r in record.revisions if r.revision < record.revision]
            target = command.to_revision or (max(earlier) if earlier else 0)
            spec = record.revision_spec(target)
            if spec is None:
                kept = ", ".join(str(r.revision) for r in record.revisions)
                raise NotFound(
                    f"revision {target} of {record.stack}_{record.name} is not kept "
                    f"(kept: {kept}); see carte rollout history"
                )
            revision = _next_revision(record)
            rollout = Rollout(
                stack=record.stack,
                service=record.name,
                revision=revision,
                from_revision=record.revision,
                state="progressing",
                total=record.replicas,
                message=f"undo to revision {target}",
            )
            record.revisions = [
                *record.revisions,
                Revision(
                    revision=revision, created=now_rfc3339(), spec=spec, change=f"undo to {target}"
                ),
            ][-KEPT_REVISIONS:]
            record.spec, record.revision, record.rollout = spec, revision, rollout
            await self.ctx.store.put(service_key(record.stack, record.name), record)
        await self._publish_updated(record)
        converger.ensure_loop(record.stack, record.name)
        return rollout


def _owner(network: Network) -> str:
    """The stack that made a network ("" for none)."""
    return network.labels.get(STACK_LABEL, "")


def _files_of(service: Service, files: dict[str, bytes]) -> dict[str, bytes]:
    """The contents of the secrets and configs `service` mounts ("secrets/NAME": bytes)."""
    refs = [f"{kind}/{name}" for kind, name, *_ in file_refs(service)]
    return {key: files[key] for key in refs if key in files}


def _replaced(
    old: ServiceRecord, service: Service, files: dict[str, bytes], env_files: dict[str, str]
) -> bool:
    """Whether `old`'s replicas give way to new ones: the template changed, the content of a
    secret or config the service mounts, or the variables its env_file entries set (Compose
    recreates the container then; a comment or reordering in an env_file changes nothing)."""
    return (
        template(old.spec) != template(service)
        or old.files != _files_of(service, files)
        or file_env(old.spec, old.env_files) != file_env(service, env_files)
    )


def _builds(plan: Plan, name: str) -> bool:
    return any(
        a.name == name and a.kind == "service" and a.action != "unchanged" for a in plan.actions
    )


def _replicas(service: Service, old: ServiceRecord | None) -> int:
    """The file's replica count; with autoscale, the current count kept within its bounds."""
    scale = service.x_carte.autoscale
    if scale is None:
        return service.deploy.replicas
    current = old.replicas if old is not None else max(service.deploy.replicas, scale.min)
    return min(max(current, scale.min), scale.max)


def _next_revision(record: ServiceRecord) -> int:
    return max([record.revision, *(r.revision for r in record.revisions)]) + 1


def _limits_changed(old: ServiceRecord, new: ServiceRecord) -> bool:
    return resources(old.spec) != resources(new.spec)


def _network_names(stack: str, manifest: Manifest) -> list[str]:
    """The daemon networks the stack makes (and removes): not the external ones."""
    return sorted(_declared_networks(stack, manifest))


def _declared_networks(stack: str, manifest: Manifest) -> dict[str, NetworkDecl | None]:
    """Daemon name -> declaration of each network the stack's services use and it owns."""
    used = {"default"}
    for service in manifest.services.values():
        if not service.network_mode:
            used.update(normalize.networks(service))
    names = network_map(stack, manifest)
    out: dict[str, NetworkDecl | None] = {}
    for key in sorted(used):
        decl = manifest.networks.get(key)
        if decl is None or not decl.external:
            out[names.get(key) or network_name(stack, key)] = decl
    return out


def network_map(stack: str, manifest: Manifest) -> dict[str, str]:
    """Manifest network name -> daemon network name (`name:` as given, else <stack>_<key>)."""
    out = {"default": network_name(stack, "default")}
    for key, decl in manifest.networks.items():
        given = decl.name if decl is not None else ""
        out[key] = given or network_name(stack, key)
    return out


def volume_map(stack: str, manifest: Manifest) -> dict[str, str]:
    """Manifest volume name -> daemon volume name (`name:` as given, else <stack>_<key>)."""
    return {
        key: (decl.name if decl is not None and decl.name else f"{stack}_{key}")
        for key, decl in manifest.volumes.items()
    }


def _unreachable_ports(manifest: Manifest) -> list[str]:
    """A warning for each published port bound to an address this host does not have: its
    rule could never match, so nothing reaches it (a typo, or another machine's address)."""
    out = []
    for name, service in manifest.services.items():
        for port in [*normalize.ports(service), *normalize.unpublished_ports(service)]:
            if not port.host_ip or _local_address(port.host_ip):
                continue
            given = f"{port.host_ip}:{port.host_port or ''}:{port.container_port}/{port.protocol}"
            out.append(
                f'service "{name}": port "{given}" is bound to {port.host_ip}, which is not an '
                "address of this host, so nothing can reach it; publish on 0.0.0.0, 127.0.0.1 "
                "or one of the host's addresses"
            )
    return out


def _local_address(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _pick_ports(service: Service, kept: dict[str, int]) -> dict[str, int]:
    """A free host port for each port the service lists without a host side; those picked
    by an earlier apply are kept."""
    out: dict[str, int] = {}
    for port in normalize.unpublished_ports(service):
        key = f"{port.container_port}/{port.protocol}"
        if key in kept:
            out[key] = kept[key]
            continue
        kind = socket.SOCK_DGRAM if port.protocol == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as probe:
            local = port.host_ip and _local_address(port.host_ip)  # else warned about
            probe.bind((port.host_ip if local else "0.0.0.0", 0))
            out[key] = probe.getsockname()[1]
    return out


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)


def _read_dotenv(project_dir: str) -> dict[str, str]:
    try:
        with open(os.path.join(project_dir, ".env"), encoding="utf-8") as file:
            return parse_dotenv(file.read())
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise InvalidArgument(f"{project_dir}/.env cannot be read: {error.strerror}") from None


def _directory_name(project_dir: str) -> str:
    """Compose's project name from a directory: lowercased, other characters dropped."""
    base = os.path.basename(os.path.normpath(project_dir)).lower()
    return "".join(c for c in base if c.isalnum() or c in "_-").lstrip("_-") or "default"


def _context_dir(project_dir: str, context: str) -> str:
    return os.path.normpath(os.path.join(project_dir, context))


def _read_env_files(project_dir: str, manifest: Manifest) -> dict[str, str]:
    return {
        name: _read_env_file(project_dir, name, service_name)
        for service_name, service in manifest.services.items()
        for name in ([service.env_file] if isinstance(service.env_file, str) else service.env_file)
    }


def _read_env_file(project_dir: str, name: str, service: str) -> str:
    path = os.path.join(project_dir, name)
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise InvalidArgument(
            f'env_file "{name}" of service "{service}" cannot be read ({path}: '
            f"{error.strerror}); create it or remove it from env_file"
        ) from None
