"""The containers handler: create, start, stop, kill, remove, pause, wait, inspect, list...

Each container runs under its own shim (docs/shim.md). The handler keeps one watcher task per
running container (a `wait` on its shim); when the container exits the watcher records the exit,
detaches its network, deletes the runtime state (the shim then exits) and publishes
`ContainerExited`. Containers outlive the daemon: on start, `run()` re-adopts every container
the store says is running (reconnecting to its shim) and settles those that exited meanwhile
from the shim's exit.json.

Disk: ROOT/containers/<id>/ holds config.json (the bundle), the overlay upper/work dirs, the
json-file log and the hostname/hosts/resolv.conf files bound into the container. Nothing is
mounted on the host: the runtime mounts the overlay root inside the container's namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import trio

from carte.api.containers import (
    ANONYMOUS_VOLUME,
    ContainerConfig,
    ContainerDetails,
    ContainerLocation,
    ContainerState,
    ContainerSummary,
    ContainerUsage,
    CreateResult,
    Endpoint,
    ExecResult,
    Health,
    MountSpec,
    PruneResult,
    Resources,
    WaitResult,
)
from carte.api.errors import (
    CarteError,
    Conflict,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from carte.api.events import (
    AttachContainerNetwork,
    ContainerCreated,
    ContainerExited,
    ContainerKilled,
    ContainerPaused,
    ContainerRemoved,
    ContainerRenamed,
    ContainerStarted,
    ContainerUnpaused,
    ContainerUpdated,
    CreateContainer,
    CreateVolume,
    DetachContainerNetwork,
    ExecInContainer,
    InspectContainer,
    InspectNetwork,
    KillContainer,
    ListContainers,
    ListContainerUsage,
    ParkContainer,
    PauseContainer,
    PruneContainers,
    RemoveContainer,
    RemoveVolume,
    RenameContainer,
    ResolveContainer,
    RestartContainer,
    SetContainerEndpoint,
    SetContainerHealth,
    SetContainerRestarting,
    StartContainer,
    StopContainer,
    UnpauseContainer,
    UpdateContainer,
    WaitContainer,
)
from carte.api.timestamps import now_rfc3339
from carte.engine import Handler, HandlerContext, on
from carte.handlers.containers._batch_exec import run_exec
from carte.handlers.containers._filters import matches_filters
from carte.handlers.containers._ipc import (
    SHAREABLE,
    bind_shm,
    check_shareable,
    mount_shm,
    shm_dir,
    unmount_shm,
)
from carte.handlers.containers._loopback import loopback_up
from carte.handlers.containers._options import ContainersOptions
from carte.handlers.containers._orphans import reap_orphans
from carte.handlers.containers._records import (
    ConnectedNetwork,
    ContainerRecord,
    Records,
    check_name,
    details,
    new_container_id,
    random_name,
    summary,
)
from carte.handlers.containers._routes import CONTAINER_ROUTES
from carte.handlers.containers._shims import (
    ShimConnection,
    ShimLauncher,
    cleanup_runtime,
    end_parked_container,
    shim_request,
)
from carte.handlers.containers._spec import (
    ContainerPaths,
    build_spec,
    extra_hosts_text,
    join_namespaces,
    join_network,
    joined_namespaces,
    live_resources,
    merge_image_defaults,
    parse_signal,
    resolv_conf_text,
    share_network_files,
)
from carte.handlers.containers._volume_seed import seed_volume
from carte.runtime.shim.client import ShimError, read_exit_file, socket_path
from carte.runtime.spec import encode_spec

T = TypeVar("T")
Usage = list[ContainerUsage]  # the class's own `list` method shadows the builtin in it

# Exits remembered for late `WaitContainer(since=...)` requests.
RECENT_EXITS = 512
# How long a SIGKILLed container's exit may take to be reported before the daemon settles it.
KILL_GRACE = 15.0
# How long settling an exit waits for the network handler to detach the container.
DETACH_GRACE = 10.0

_RUNNING = ("running", "paused", "restarting")


class _Run:
    """One run of a container: set once it has exited (watchers of `wait` use it). Whoever
    settles the run's exit first claims it (`settling`), so one exit is settled once."""

    def __init__(self) -> None:
        self.exited = trio.Event()
        self.result = WaitResult(status_code=0)
        self.settling = False


class ContainersHandler(Handler):
    """Containers: the lifecycle commands of carte/api/events/containers.py, and their facts."""

    name = "containers"
    Options = ContainersOptions
    section = "containers"
    routes = CONTAINER_ROUTES  # logs, attach, exec, cp

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.copies = trio.CapacityLimiter(4)  # cp routes: archives made or unpacked at once
        self.records = Records(ctx.store)
        self.state_dir = ctx.run_root / "runtime"
        self.containers_dir = ctx.root / "containers"
        self._nursery: trio.Nursery | None = None
        self._record_locks: dict[str, trio.Lock] = {}
        self._operation_locks: dict[str, trio.Lock] = {}
        self._runs: dict[str, _Run] = {}
        self._watched: dict[str, _Run] = {}
        self._parked: dict[str, int] = {}
        self._restarts: set[str] = set()
        """Containers a user's restart is stopping: their exit reads "restarting"."""
        self._recent_exits: dict[str, tuple[float, _Run]] = {}
        """Container pids parked under a shim this daemon created (saves asking the shim)."""
        self._limiter = trio.CapacityLimiter(8)
        self.launcher = ShimLauncher(ctx.run_root / "shim-factory.sock")

    # --- life of the handler --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Re-adopt containers, then serve until cancelled. Cancelling stops the watchers only:
        the containers and their shims keep running for the next daemon."""
        self.containers_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.launcher.serve)
            dead: list[str] = []
            records = await self.records.all()
            for record in records:
                await self._adopt(record, dead)
            known = {record.id for record in records}
            await self._thread(lambda: reap_orphans(self.containers_dir, known, self.ctx.log))
            task_status.started()
            if dead:
                nursery.start_soon(self._detach_dead, dead)
            await trio.sleep_forever()

    async def _adopt(self, record: ContainerRecord, dead: list[str]) -> None:
        """Watch a container that still runs; settle one that died while no daemon ran and add
        its id to `dead` (its network endpoints are freed later, by `_detach_dead`)."""
        if record.state.status == "restarting":
            await self._update(record.id, _end_restarting)  # the restart handler decides anew
            return
        if record.state.status not in _RUNNING:
            return
        try:
            async with ShimConnection(self.state_dir, record.id) as connection:
                state = (await connection.request({"op": "state"}))["state"]
        except (Unavailable, ShimError, OSError):
            state = None
        run = self._pending_run(record.id)
        if state is not None and state.get("status") == "running":
            self._watch(record.id, run)
            self.ctx.log.info("re-adopted container %s (%s)", record.short_id, record.name)
            return
        exit_record = read_exit_file(self.state_dir, record.id) or {}
        await self._settle_exit(record.id, run, exit_record, lost=not exit_record, detach=False)
        dead.append(record.id)

    async def _detach_dead(self, container_ids: list[str]) -> None:
        """Free the network endpoints of containers found dead at adoption. The network handler
        starts after this one, so settling their exits could not wait for it (it cost 10 s per
        container); here each waits for it, under the container's operation lock, and only if
        the container was not started again meanwhile. Failures are ignored: the network
        handler's own start already released endpoints whose interface is gone."""
        for container_id in container_ids:
            async with self._operation_lock(container_id):
                record = await self.records.get(container_id)
                if record is None or record.state.status in _RUNNING:
                    continue
                if record.config.network not in ("none", "host"):
                    detach = DetachContainerNetwork(container_id=container_id)
                    await _ignore_errors(self.ctx.bus.request(detach))

    # --- helpers --------------------------------------------------------------------------

    def paths(self, container_id: str) -> ContainerPaths:
        return ContainerPaths(directory=self.containers_dir / container_id)

    def _record_lock(self, container_id: str) -> trio.Lock:
        return self._record_locks.setdefault(container_id, trio.Lock())

    def _operation_lock(self, container_id: str) -> trio.Lock:
        return self._operation_locks.setdefault(container_id, trio.Lock())

    async def _update(
        self, container_id: str, change: Callable[[ContainerRecord], None]
    ) -> ContainerRecord:
        """Read, change and write one record under its lock; `NotFound` if it is gone."""
        async with self._record_lock(container_id):
            record = await self.records.get(container_id)
            if record is None:
                raise NotFound(f'no such container: "{container_id[:12]}"; see carte ps -a')
            change(record)
            await self.records.save(record)
            return record

    def _remember_exit(self, container_id: str, run: _Run) -> None:
        """Remember a while that `run` ended now, for waiters that come late
        (`WaitContainer.since`), even while the exit is being settled or once the container
        is removed."""
        if self._recent_exits.get(container_id, (0.0, None))[1] is run:
            return
        self._recent_exits.pop(container_id, None)
        self._recent_exits[container_id] = (time.time(), run)
        while len(self._recent_exits) > RECENT_EXITS:
            del self._recent_exits[next(iter(self._recent_exits))]

    def _finish_run(self, container_id: str, run: _Run | None, result: WaitResult) -> None:
        """Wake the waiters of `run` with `result` (remembered for late waiters)."""
        run = run or _Run()
        self._remember_exit(container_id, run)
        if not run.exited.is_set():
            run.result = result
            run.exited.set()

    def _pending_run(self, container_id: str) -> _Run:
        run = self._runs.get(container_id)
        if run is None or run.exited.is_set():
            run = self._runs[container_id] = _Run()
        return run

    async def _thread(self, work: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    # --- create -----------------------------------------------------------------------------

    @on(CreateContainer)
    async def create(self, command: CreateContainer) -> CreateResult:
        """Record the container, write its bundle and create it under a shim (parked before
        exec). On any failure nothing is left: no record, directory, cgroup or shim."""
        from carte.image import ImageStore, lowerdirs

        config = command.config
        name = check_name(config.name) if config.name else ""
        store = ImageStore(self.ctx.root)
        try:
            image = await self._thread(lambda: store.get(config.image))
        except NotFound:
            raise NotFound(
                f'Unable to find image "{_with_tag(config.image)}" locally; import it '
                f"(carte import TAR {config.image}) or pull it (carte pull {config.image})"
            ) from None
        merged = merge_image_defaults(config, image.config.config)
        self.ctx.options.check_ports(merged)  # ceilings: before anything is made
        if merged.shm_size < 0:
            raise InvalidArgument(f"--shm-size {merged.shm_size}: a size cannot be negative")
        self.ctx.options.check_ulimits(merged.resources)
        warnings: list[str] = []
        network_handler = await self._network_available()
        joined = await self._joined_network(merged.network)
        if network_handler and merged.network not in ("none", "host", "default", "bridge"):
            if joined is None:
                await self.ctx.bus.request(InspectNetwork(name=merged.network))  # NotFound
        if merged.network not in ("none", "host") and not network_handler and joined is None:
            warnings.append(
                f'network "{merged.network}" is not available (no network handler); '
                "the container gets its own network namespace with loopback only"
            )
        if merged.stop_signal:
            parse_signal(merged.stop_signal)
        container_id = new_container_id()
        paths = self.paths(container_id)
        created_volumes: list[str] = []
        added = False
        try:
            layers = await self._thread(lambda: lowerdirs(store, image))
            merged, created_volumes, sources = await self._prepare_mounts(
                merged, container_id, layers
            )
            spec = await self._thread(  # reads the image's /etc/passwd: off the loop
                lambda: build_spec(
                    merged,
                    container_id=container_id,
                    paths=paths,
                    lowerdirs=layers,
                    mount_sources=sources,
                )
            )
            if joined is not None:
                join_network(spec, f"/proc/{joined.state.pid}/ns/net")
            record = ContainerRecord(
                id=container_id,
                name=name or await self._free_random_name(),
                created=now_rfc3339(),
                image=config.image,
                image_id=image.id,
                config=merged,
            )
            await self._thread(lambda: _write_bundle(paths, spec, record))
            if joined is not None:  # its names and resolvers are those of the joined one
                shared = self.paths(joined.id)
                await self._thread(lambda: share_network_files(shared, paths))
            await self.records.add(record)
            added = True
            self._parked[record.id] = await self._create_shim(record)
        except BaseException:
            with trio.CancelScope(shield=True):
                if added:
                    await self.records.remove(record)
                await self._thread(lambda: _remove_directory(paths.directory))
                for volume in created_volumes:
                    await _ignore_errors(self.ctx.bus.request(RemoveVolume(name=volume)))
            raise
        await self.ctx.bus.publish(
            ContainerCreated(id=record.id, name=record.name, image=record.image)
        )
        return CreateResult(id=record.id, warnings=warnings)

    async def _joined_network(self, network: str) -> ContainerRecord | None:
        """The running container whose network `container:NAME` joins (None for other
        modes); `Conflict` when it is not running."""
        kind, _, ref = network.partition(":")
        if kind != "container" or not ref:
            return None
        target = await self.records.resolve(ref)
        if target.state.status != "running" or not target.state.pid:
            raise Conflict(
                f'cannot join the network of container "{target.name}": it is not running; '
                "start it first"
            )
        return target

    async def _network_available(self) -> bool:
        """Whether some handler answers AttachContainerNetwork (it may still be down)."""
        return self.ctx.bus.owner_of(AttachContainerNetwork) is not None

    async def _free_random_name(self) -> str:
        for _ in range(50):
            name = random_name()
            if await self.ctx.store.get(f"container-names/{name}") is None:
                return name
        return f"{random_name()}_{os.urandom(2).hex()}"

    async def _prepare_mounts(
        self, config: ContainerConfig, container_id: str, layers: list[Path]
    ) -> tuple[ContainerConfig, list[str], dict[str, Path]]:
        """Check bind sources, create named and anonymous volumes; the config with anonymous
        volumes named, the volumes created here, and each volume's host directory."""
        mounts: list[MountSpec] = []
        created: list[str] = []
        sources: dict[str, Path] = {}
        for mount in config.mounts:
            if mount.type == "bind":
                if not mount.source.startswith("/"):
                    raise InvalidArgument(
                        f'bind mount source "{mount.source}" is not an absolute path; '
                        "use -v /host/dir:/target"
                    )
                if not await trio.Path(mount.source).exists():
                    raise InvalidArgument(
                        f'bind mount source "{mount.source}" does not exist; create it first '
                        f"(mkdir -p {mount.source}) or fix the path"
                    )
            elif mount.type == "volume":
                name = mount.source or new_container_id()
                existed = await self.ctx.store.get(f"volumes/{name}") is not None
                labels = {} if mount.source else {ANONYMOUS_VOLUME: container_id}
                volume = await self.ctx.bus.request(CreateVolume(name=name, labels=labels))
                if not existed:
                    created.append(name)
                sources[name] = Path(volume.mountpoint)
                await trio.to_thread.run_sync(
                    seed_volume,
                    Path(volume.mountpoint),
                    layers,
                    mount.target,
                    limiter=self._limiter,
                )
                mount = msgspec.structs.replace(mount, source=name)
            mounts.append(mount)
        return msgspec.structs.replace(config, mounts=mounts), created, sources

    async def _create_shim(self, record: ContainerRecord) -> int:
        """Create the container under a new shim and return its pid; on failure the shim
        cleaned up after itself and the error (one line) is raised."""
        paths = self.paths(record.id)
        log = self.ctx.options.log
        await self._join_namespaces(record)
        if record.config.ipc_mode == SHAREABLE:
            await self._thread(lambda: mount_shm(paths.directory, record.config.shm_size))
        try:
            report = await self.launcher.create(
                container_id=record.id,
                bundle=paths.directory,
                state_dir=self.state_dir,
                log_path=paths.log,
                log_max_size=record.config.log.max_size or log.max_size,
                log_max_file=record.config.log.max_file or log.max_file,
                stdin=record.config.open_stdin,
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._thread(lambda: cleanup_runtime(self.state_dir, record.id))
            raise
        return int(report["pid"])

    async def _join_namespaces(self, record: ContainerRecord) -> None:
        """Point the bundle's joined namespaces (`--network/--pid container:REF`) at the
        target's as it runs now: a pid written at create time may be another process's after
        a restart. `Conflict` when a target is not running."""
        from carte.runtime.spec import load_spec

        joins = joined_namespaces(record.config)
        if not joins:
            return
        pids: dict[str, int] = {}
        shm: Path | None = None
        for kind, ref in joins.items():
            target = await self.records.resolve(ref)
            if kind == "ipc":
                check_shareable(target.name, target.config.ipc_mode)
                shm = shm_dir(self.paths(target.id).directory)
            if target.state.status != "running" or not target.state.pid:
                raise Conflict(
                    f'cannot join the {kind} namespace of container "{target.name}": it is '
                    "not running; start it first"
                )
            pids[kind] = target.state.pid
        bundle = self.paths(record.id).directory / "config.json"

        def rewrite() -> None:
            spec = load_spec(bundle)
            join_namespaces(spec, pids)
            if shm is not None:
                bind_shm(spec, shm)
            bundle.write_bytes(encode_spec(spec))

        await self._thread(rewrite)

    # --- start ------------------------------------------------------------------------------

    @on(ParkContainer)
    async def park(self, command: ParkContainer) -> None:
        record = await self.records.resolve(command.ref)
        async with self._operation_lock(record.id):
            record = await self.records.resolve(record.id)
            if record.state.status not in ("exited", "created") or record.id in self._parked:
                return
            pid = await self._parked_pid(record.id) or await self._create_shim(record)
            self._parked[record.id] = pid

    @on(StartContainer)
    async def start(self, command: StartContainer) -> None:
        """Start a created or exited container; a running one is left alone (Docker's 304).

        Raises `InvalidArgument` naming the command when it cannot be run (exit 126/127 in the
        client). On failure the container is left exited, with the error in its state."""
        record = await self.records.resolve(command.ref)
        async with self._operation_lock(record.id):
            started = await self._start(record.id)
        if started is not None:
            await self.ctx.bus.publish(
                ContainerStarted(id=started.id, name=started.name, pid=started.state.pid)
            )

    async def _start(self, container_id: str, address: str = "") -> ContainerRecord | None:
        """Start the container (its operation lock held); the started record, or None when it
        was running already. `address`: the one it had, asked for again (a restart)."""
        record = await self.records.resolve(container_id)
        if record.state.status in ("running", "paused"):
            return None
        parked = self._parked.pop(record.id, 0) or await self._parked_pid(record.id)
        parked = parked or await self._create_shim(record)
        run = self._pending_run(record.id)
        try:
            endpoint = await self._attach_network(record, parked, address)
            joined = await self._join_connected(record, parked) if endpoint else []
            reply = await shim_request(self.state_dir, record.id, {"op": "start"})
        except CarteError as error:
            with trio.CancelScope(shield=True):
                await self._fail_start(record, error)
            raise _start_error(record, error) from None
        pid = int(reply["state"].get("pid") or 0)

        def started(r: ContainerRecord) -> None:
            r.stop_requested = False
            r.state = ContainerState(
                status="running",
                running=True,
                pid=pid,
                started_at=now_rfc3339(),
                health=_initial_health(r.config),
            )
            if endpoint is not None:  # written with the start: one store commit, not two
                r.endpoints = [endpoint, *joined]
                kept = {e.network for e in joined}  # a network removed meanwhile is forgotten
                r.connected = {k: v for k, v in r.connected.items() if k in kept}

        record = await self._update(record.id, started)
        self._runs[record.id] = run
        self._watch(record.id, run)
        return record

    async def _parked_pid(self, container_id: str) -> int:
        """The pid of the container parked under its shim, or 0 after clearing away a shim
        whose container already ran (or none)."""
        try:
            reply = await shim_request(self.state_dir, container_id, {"op": "state"})
        except (Unavailable, ShimError):
            reply = {"state": {}}
        if reply["state"].get("status") == "created":
            return int(reply["state"]["pid"])
        await end_parked_container(self.state_dir, container_id)
        await self._thread(lambda: cleanup_runtime(self.state_dir, container_id))
        return 0

    async def _attach_network(
        self, record: ContainerRecord, pid: int, address: str = ""
    ) -> Endpoint | None:
        """Loopback up, and the container on its network; the endpoint it got, if any."""
        config = record.config
        if config.network == "host" or config.network.startswith("container:"):
            return None
        netns = f"/proc/{pid}/ns/net"
        try:
            await self._thread(lambda: loopback_up(netns))
        except OSError as error:
            raise Internal(f"cannot bring up loopback in {netns}: {error.strerror}") from None
        if config.network == "none":
            return None
        attach = AttachContainerNetwork(
            container_id=record.id,
            container_name=record.name,
            hostname=config.hostname or record.short_id,
            netns_path=netns,
            network=config.network,
            aliases=list(config.network_aliases),
            ip=config.ip or address,
            ports=list(config.ports),
            labels=dict(config.labels),
            mac=config.mac_address,
        )
        try:
            try:
                endpoint = await self.ctx.bus.request(attach)
            except (Conflict, InvalidArgument):
                if attach.ip == config.ip:
                    raise
                # the old address was taken meanwhile: any address
                attach = msgspec.structs.replace(attach, ip=config.ip)
                endpoint = await self.ctx.bus.request(attach)
        except Unavailable:
            return None
        paths = self.paths(record.id)
        if endpoint.dns_servers or config.dns or config.dns_search:
            resolv = resolv_conf_text([*endpoint.dns_servers, *config.dns], config.dns_search)
            await self._thread(lambda: _rewrite(paths.resolv_conf, resolv))
        if endpoint.ip_address:
            hosts = _hosts_file(
                config.hostname or record.short_id,
                endpoint.ip_address,
                config.extra_hosts,
                endpoint.gateway,
            )
            await self._thread(lambda: _rewrite(paths.hosts_file, hosts))
        return endpoint

    async def _join_connected(self, record: ContainerRecord, pid: int) -> list[Endpoint]:
        """The networks joined with `network connect`, joined again (no default route through
        them); one removed meanwhile is left out, with a warning."""
        joined = []
        for network, connected in sorted(record.connected.items()):
            attach = AttachContainerNetwork(
                container_id=record.id,
                container_name=record.name,
                hostname=record.config.hostname or record.short_id,
                netns_path=f"/proc/{pid}/ns/net",
                network=network,
                aliases=list(connected.aliases),
                ip=connected.ip,
                labels=dict(record.config.labels),
                default_route=False,
            )
            try:
                joined.append(await self.ctx.bus.request(attach))
            except NotFound as error:
                self.ctx.log.warning("container %s: %s", record.short_id, error.message)
        return joined

    async def _veths_gone(self, container_id: str) -> None:
        """Wait until the network handler deleted the veths of a container it detached (it
        does so after answering the detach, while the exit is recorded)."""
        with trio.move_on_after(DETACH_GRACE):
            await _ignore_errors(
                self.ctx.bus.request(DetachContainerNetwork(container_id=container_id))
            )

    async def _fail_start(self, record: ContainerRecord, error: CarteError) -> None:
        await _ignore_errors(self.ctx.bus.request(DetachContainerNetwork(container_id=record.id)))
        await end_parked_container(self.state_dir, record.id)
        await self._thread(lambda: cleanup_runtime(self.state_dir, record.id))
        code = _start_exit_code(error)

        def failed(r: ContainerRecord) -> None:
            r.state = ContainerState(
                status="exited" if r.state.started_at else "created",
                exit_code=code,
                error=error.message,
                started_at=r.state.started_at,
                finished_at=now_rfc3339(),
            )

        await _ignore_errors(self._update(record.id, failed))
        await self._veths_gone(record.id)
        self._finish_run(
            record.id, self._runs.get(record.id), WaitResult(status_code=code, error=error.message)
        )

    # --- watching and exits -----------------------------------------------------------------

    def _watch(self, container_id: str, run: _Run) -> None:
        """Watch `run` of the container (one watcher per run; a previous run's watcher that is
        still finishing does not keep the new run unwatched)."""
        if self._watched.get(container_id) is run or self._nursery is None:
            return
        self._watched[container_id] = run
        self._nursery.start_soon(self._watcher, container_id, run)

    async def _watcher(self, container_id: str, run: _Run) -> None:
        """Wait on the shim until the container exits, then settle the exit of `run`.
        Cancelled when the daemon stops (the container keeps running)."""
        try:
            try:
                async with ShimConnection(self.state_dir, container_id) as connection:
                    exit_record = (await connection.request({"op": "wait"}))["exit"]
                lost = False
            except (Unavailable, ShimError):
                exit_record = read_exit_file(self.state_dir, container_id) or {}
                lost = not exit_record
            await self._settle_exit(container_id, run, exit_record, lost=lost)
        except Exception as failure:
            # Never leave waiters hanging because one exit could not be recorded.
            self.ctx.log.error("container %s: exit not recorded: %r", container_id[:12], failure)
            failed = WaitResult(status_code=255, error=str(failure))
            self._finish_run(container_id, run, failed)
        finally:
            if self._watched.get(container_id) is run:
                del self._watched[container_id]

    async def _settle_exit(
        self,
        container_id: str,
        run: _Run,
        exit_record: dict[str, object],
        *,
        lost: bool,
        detach: bool = True,
    ) -> None:
        """Record the exit of `run`, free the runtime side, publish `ContainerExited`, honour
        --rm. Settled once: a second settler of the same run (a stop that gave up waiting on
        the watcher) returns at once, and so does a late one for a run that is over.
        `detach=False` leaves the network endpoints to the caller."""
        if run.settling or run.exited.is_set():
            return
        run.settling = True
        self._remember_exit(container_id, run)
        code = int(str(exit_record.get("exit_code", 255)))
        oom = bool(exit_record.get("oom_killed", False))
        error = "the container's shim was gone; its exit code is unknown" if lost else ""
        result = WaitResult(status_code=code, oom_killed=oom, error=error)
        with trio.CancelScope(shield=True):
            current = await self.records.get(container_id)
            if current is None or current.state.status not in _RUNNING:
                self._finish_run(container_id, run, result)
                return
            if detach and current.config.network not in ("none", "host"):
                with trio.move_on_after(DETACH_GRACE):
                    await _ignore_errors(
                        self.ctx.bus.request(DetachContainerNetwork(container_id=container_id))
                    )
            try:
                if not current.config.auto_remove:  # else removing it cleans up below
                    await self._thread(lambda: cleanup_runtime(self.state_dir, container_id))
            except OSError as failure:
                self.ctx.log.warning(
                    "container %s: runtime state not removed: %s", container_id[:12], failure
                )

            def exited(r: ContainerRecord) -> None:
                r.state = ContainerState(
                    status="restarting" if container_id in self._restarts else "exited",
                    restarting=container_id in self._restarts,
                    exit_code=code,
                    oom_killed=oom,
                    error=error,
                    started_at=r.state.started_at,
                    finished_at=str(exit_record.get("finished_at") or now_rfc3339()),
                    health=r.state.health,
                )
                r.endpoints = []

            try:
                record = await self._update(container_id, exited)
            except NotFound:
                self._finish_run(container_id, run, result)
                return
            await self.ctx.bus.publish(
                ContainerExited(
                    id=record.id,
                    name=record.name,
                    exit_code=code,
                    oom_killed=oom,
                    requested=record.stop_requested,
                )
            )
            if record.config.auto_remove:
                # Before waiters hear of the exit, so `run --rm` returns with the container gone.
                await _ignore_errors(self._remove(record, volumes=True, exited=True))
            if detach and current.config.network not in ("none", "host"):
                await self._veths_gone(container_id)
            self._finish_run(container_id, run, result)

    # --- stop, kill, restart ------------------------------------------------------------------

    @on(StopContainer)
    async def stop(self, command: StopContainer) -> None:
        """Stop the container; a stop that waited for another operation (a restart policy's
        start) acts on the container as that operation left it."""
        if command.signal:
            parse_signal(command.signal, "--signal")  # refused before anything changes
        container_id = (await self.records.resolve(command.ref)).id
        async with self._operation_lock(container_id):
            record = await self.records.resolve(container_id)
            await self._stop(record, command.timeout, command.signal)

    async def _stop(self, record: ContainerRecord, grace: int | None, by_signal: str = "") -> None:
        """Stop signal (or `by_signal`), then SIGKILL after the timeout; returns once the exit is
        settled.
        A restarting container (no process, waiting for its restart) just becomes exited;
        an exited one is marked stopped, so a restart its policy was about to make is not."""
        if record.state.status == "restarting":
            await self._update(record.id, _end_restarting)
            return
        if record.state.status == "exited":
            await self._update(record.id, _mark_stop_requested)
            return
        if record.state.status not in _RUNNING:
            return
        run = self._pending_run(record.id)
        await self._update(record.id, _mark_stop_requested)
        stop_signal = parse_signal(by_signal or record.config.stop_signal or "TERM")
        timeout = grace if grace is not None else record.config.stop_timeout
        if timeout is None:
            timeout = self.ctx.options.stop_timeout
        await self._signal(record, stop_signal, all_processes=False)
        if record.state.status == "paused":
            await self._freeze(record.id, freeze=False)
        with trio.move_on_after(max(timeout, 0)):
            await run.exited.wait()
        if not run.exited.is_set():
            await self._signal(record, signal.SIGKILL, all_processes=True)
            await self._wait_exit(record.id, run)

    async def _wait_exit(self, container_id: str, run: _Run) -> None:
        """Wait for a killed container's exit to be settled. A watcher that is missing or stuck
        (no shim answers) is not waited on forever: after a while the exit is settled here."""
        with trio.move_on_after(KILL_GRACE):
            await run.exited.wait()
            return
        if run.settling:
            await run.exited.wait()  # the watcher is recording it (bounded: it is shielded)
            return
        self.ctx.log.warning("container %s: no exit seen after SIGKILL", container_id[:12])
        exit_record = read_exit_file(self.state_dir, container_id) or {"exit_code": 137}
        await self._settle_exit(container_id, run, exit_record, lost=False)

    async def _signal(self, record: ContainerRecord, sig: int, *, all_processes: bool) -> None:
        try:
            await shim_request(
                self.state_dir, record.id, {"op": "kill", "signal": sig, "all": all_processes}
            )
        except (ShimError, Unavailable):
            pass  # it exited meanwhile; the watcher settles it

    @on(KillContainer)
    async def kill(self, command: KillContainer) -> None:
        """Signal the container. Not serialized with a running stop (a kill cuts a long stop
        short, as in Docker); the state is checked and marked in one step on the current
        record, so a kill racing an exit or a restart never acts on a stale one."""
        container_id = (await self.records.resolve(command.ref)).id
        sig = parse_signal(command.signal, "--signal")

        def killable(r: ContainerRecord) -> None:
            if r.state.status == "restarting":
                raise Conflict(
                    f'container "{r.name}" is restarting; wait until it runs or stop it '
                    f"(carte stop {r.name})"
                )
            if r.state.status not in _RUNNING:
                raise Conflict(
                    f'cannot kill container "{r.name}": it is not running; see carte ps -a'
                )
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                r.stop_requested = True

        record = await self._update(container_id, killable)
        await self._signal(record, sig, all_processes=sig == signal.SIGKILL)
        await self.ctx.bus.publish(ContainerKilled(id=record.id, signal=signal.Signals(sig).name))

    @on(RestartContainer)
    async def restart(self, command: RestartContainer) -> None:
        """Stop and start again under one hold of the operation lock, so no other stop or
        start (a restart policy's) comes between them. In between the container reads
        "restarting" (its exit is recorded so), so an orchestrator waits for it instead of
        replacing it; it gets its address back when that is still free."""
        if command.signal:
            parse_signal(command.signal, "--signal")  # refused before anything changes
        container_id = (await self.records.resolve(command.ref)).id
        async with self._operation_lock(container_id):
            record = await self.records.resolve(container_id)
            address = next((e.ip_address for e in record.endpoints if e.ip_address), "")
            self._restarts.add(container_id)
            try:
                await self._stop(record, command.timeout, command.signal)
            finally:
                self._restarts.discard(container_id)
            try:
                started = await self._start(container_id, address)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await _ignore_errors(self._update(container_id, _end_restarting))
                raise
        if started is not None:
            await self.ctx.bus.publish(
                ContainerStarted(id=started.id, name=started.name, pid=started.state.pid)
            )

    # --- pause ------------------------------------------------------------------------------

    async def _freeze(self, container_id: str, *, freeze: bool) -> None:
        from carte.runtime.cgroups import open_cgroup

        cgroup = open_cgroup(f"/carte/{container_id}")
        await self._thread(cgroup.freeze if freeze else cgroup.thaw)

    @on(PauseContainer)
    async def pause(self, command: PauseContainer) -> None:
        record = await self.records.resolve(command.ref)
        if record.state.status != "running":
            raise Conflict(f'cannot pause container "{record.name}": it is not running')
        await self._freeze(record.id, freeze=True)

        def paused(r: ContainerRecord) -> None:
            r.state = msgspec.structs.replace(r.state, status="paused", paused=True)

        await self._update(record.id, paused)
        await self.ctx.bus.publish(ContainerPaused(id=record.id))

    @on(UnpauseContainer)
    async def unpause(self, command: UnpauseContainer) -> None:
        record = await self.records.resolve(command.ref)
        if record.state.status != "paused":
            raise Conflict(f'cannot unpause container "{record.name}": it is not paused')
        await self._freeze(record.id, freeze=False)

        def running(r: ContainerRecord) -> None:
            if r.state.status == "paused":
                r.state = msgspec.structs.replace(r.state, status="running", paused=False)

        await self._update(record.id, running)
        await self.ctx.bus.publish(ContainerUnpaused(id=record.id))

    # --- remove -----------------------------------------------------------------------------

    @on(RemoveContainer)
    async def remove(self, command: RemoveContainer) -> None:
        record = await self.records.resolve(command.ref)
        async with self._operation_lock(record.id):
            record = await self.records.resolve(record.id)
            if record.state.status == "restarting":
                if not command.force:
                    raise Conflict(
                        f'cannot remove container "{record.name}": it is restarting; stop it '
                        "first or force remove (carte rm -f)"
                    )
                record = await self._update(record.id, _end_restarting)
            if record.state.status in _RUNNING:
                if not command.force:
                    raise Conflict(
                        f'cannot remove container "{record.name}": container is running: '
                        "stop the container before removing or force remove (carte rm -f)"
                    )
                run = self._pending_run(record.id)
                await self._update(record.id, _mark_stop_requested)
                if record.state.status == "paused":
                    await self._freeze(record.id, freeze=False)
                await self._signal(record, signal.SIGKILL, all_processes=True)
                await self._wait_exit(record.id, run)
                if record.config.auto_remove:
                    return  # the exit removed it
            await self._remove(record, volumes=command.volumes)

    async def _remove(
        self, record: ContainerRecord, *, volumes: bool, exited: bool = False
    ) -> None:
        """Delete what is left of a stopped (or created) container, then its record."""
        if not exited:
            await end_parked_container(self.state_dir, record.id)
        await self._thread(lambda: cleanup_runtime(self.state_dir, record.id))
        self._parked.pop(record.id, None)
        directory = self.paths(record.id).directory
        await self._thread(lambda: _remove_directory(directory))
        try:
            await self.records.remove(record)
        except NotFound:
            return
        self._runs.pop(record.id, None)
        self._record_locks.pop(record.id, None)
        if volumes:
            for mount in record.config.mounts:
                if mount.type == "volume":
                    entry = await self.ctx.store.get(f"volumes/{mount.source}")
                    if (
                        entry is not None
                        and f'"{ANONYMOUS_VOLUME}":"{record.id}"' in entry.value.decode()
                    ):
                        await _ignore_errors(self.ctx.bus.request(RemoveVolume(name=mount.source)))
        await self.ctx.bus.publish(ContainerRemoved(id=record.id, name=record.name))

    @on(PruneContainers)
    async def prune(self, command: PruneContainers) -> PruneResult:
        deleted: list[str] = []
        for record in await self.records.all():
            if record.state.status in ("exited", "dead", "created") and matches_filters(
                record, command.filters, prune=True
            ):
                async with self._operation_lock(record.id):
                    current = await self.records.get(record.id)
                    if current is None or current.state.status not in ("exited", "dead", "created"):
                        continue  # started or removed meanwhile
                    await self._remove(current, volumes=False)
                deleted.append(record.id)
        return PruneResult(deleted=deleted)

    # --- rename, update -----------------------------------------------------------------------

    @on(RenameContainer)
    async def rename(self, command: RenameContainer) -> None:
        record = await self.records.resolve(command.ref)
        new_name = check_name(command.name)
        if new_name == record.name:
            raise Conflict(f'container "{record.name}" already has that name; pick another one')
        old_name = record.name
        async with self._record_lock(record.id):
            record = await self.records.resolve(record.id)
            await self.records.rename(record, new_name)
        await self.ctx.bus.publish(ContainerRenamed(id=record.id, old_name=old_name, name=new_name))

    @on(UpdateContainer)
    async def update(self, command: UpdateContainer) -> None:
        from carte.runtime.cgroups import open_cgroup

        record = await self.records.resolve(command.ref)
        resources = command.resources
        if resources is not None:
            self.ctx.options.check_ulimits(resources)
        if resources is not None and record.state.status in _RUNNING:
            merged = _merged_resources(record.config.resources, resources)
            update = live_resources(merged)
            cgroup = open_cgroup(f"/carte/{record.id}")
            try:
                await self._thread(lambda: cgroup.update(update))
            except OSError as error:
                raise InvalidArgument(
                    f'cannot update container "{record.name}": the kernel refused the new '
                    f"limits ({error.strerror}); a memory limit below current usage fails"
                ) from None

        def updated(r: ContainerRecord) -> None:
            if resources is not None:
                merged = _merged_resources(r.config.resources, resources)
                r.config = msgspec.structs.replace(r.config, resources=merged)
            if command.restart is not None:
                r.config = msgspec.structs.replace(r.config, restart=command.restart)

        await self._update(record.id, updated)
        await self.ctx.bus.publish(ContainerUpdated(id=record.id))

    # --- health and restart state (written for the health and restart handlers) ------------

    @on(SetContainerHealth)
    async def set_health(self, command: SetContainerHealth) -> None:
        record = await self.records.resolve(command.ref)

        def store(r: ContainerRecord) -> None:
            if r.state.status in ("running", "paused"):
                r.state = msgspec.structs.replace(r.state, health=command.health)

        await self._update(record.id, store)

    @on(SetContainerEndpoint)
    async def set_endpoint(self, command: SetContainerEndpoint) -> None:
        def store(r: ContainerRecord) -> None:
            if r.state.status in ("running", "paused"):
                kept = [e for e in r.endpoints if e.network != command.network]
                r.endpoints = kept + ([command.endpoint] if command.endpoint else [])
            if command.connected:
                wanted = ConnectedNetwork(aliases=list(command.aliases), ip=command.ip)
                r.connected = {**r.connected, command.network: wanted}
            else:
                r.connected = {k: v for k, v in r.connected.items() if k != command.network}

        await self._update(command.container_id, store)

    @on(SetContainerRestarting)
    async def set_restarting(self, command: SetContainerRestarting) -> None:
        record = await self.records.resolve(command.ref)

        def restarting(r: ContainerRecord) -> None:
            if r.state.status != "exited" or r.stop_requested:
                raise Conflict(f'container "{r.name}" is {r.state.status}; it is not restarted')
            r.state = msgspec.structs.replace(r.state, status="restarting", restarting=True)
            r.restart_count = command.restart_count

        async with self._operation_lock(record.id):
            await self._update(record.id, restarting)

    # --- reading ----------------------------------------------------------------------------

    @on(InspectContainer)
    async def inspect(self, command: InspectContainer) -> ContainerDetails:
        record = await self.records.resolve(command.ref)
        return details(record, self.paths(record.id).log)

    @on(ListContainers)
    async def list(self, command: ListContainers) -> list[ContainerSummary]:
        rows = [
            summary(record)
            for record in reversed(await self.records.all())
            if (command.all or record.state.status in _RUNNING)
            and matches_filters(record, command.filters)
        ]
        return rows

    @on(ResolveContainer)
    async def resolve(self, command: ResolveContainer) -> ContainerLocation:
        record = await self.records.resolve(command.ref)
        paths = self.paths(record.id)
        shim = socket_path(self.state_dir, record.id)
        spec_layers = await self._thread(lambda: _lowerdirs_of(paths))
        return ContainerLocation(
            id=record.id,
            name=record.name,
            status=record.state.status,
            pid=record.state.pid,
            shim_socket=str(shim) if shim.exists() else "",
            state_dir=str(self.state_dir),
            bundle=str(paths.directory),
            log_path=str(paths.log),
            upper_dir=str(paths.upper),
            lower_dirs=spec_layers,
            tty=record.config.tty,
            open_stdin=record.config.open_stdin,
            network=record.config.network,
            hostname=record.config.hostname or record.short_id,
            labels=dict(record.config.labels),
            connected=sorted(record.connected),
        )

    @on(ListContainerUsage)
    async def usage(self, command: ListContainerUsage) -> Usage:
        return [
            ContainerUsage(
                id=record.id,
                name=record.name,
                status=record.state.status,
                image_id=record.image_id,
                volumes=[m.source for m in record.config.mounts if m.type == "volume"],
            )
            for record in await self.records.all()
        ]

    @on(WaitContainer)
    async def wait(self, command: WaitContainer) -> WaitResult:
        """Block until the container is not running ("not-running", the default) or until its
        next exit ("next-exit"); its exit code. Cancelling the request just stops waiting.
        With `since`, a next exit that already happened at or after it counts (by full id)."""
        if command.condition not in ("not-running", "next-exit"):
            raise InvalidArgument(
                f'wait condition "{command.condition}" is unknown; use not-running or next-exit'
            )
        try:
            record = await self.records.resolve(command.ref)
        except NotFound:
            # A --rm container may be gone before its waiter came: its exit is the answer.
            late = self._exit_since(command.ref, command.since)
            if command.condition != "next-exit" or late is None:
                raise
            await late.exited.wait()
            return late.result
        if command.condition == "next-exit":
            late = self._exit_since(record.id, command.since)
            if late is not None:
                await late.exited.wait()
                return late.result
        if command.condition == "not-running" and record.state.status not in _RUNNING:
            state = record.state
            return WaitResult(
                status_code=state.exit_code, oom_killed=state.oom_killed, error=state.error
            )
        run = self._pending_run(record.id)
        await run.exited.wait()
        return run.result

    def _exit_since(self, container_id: str, since: float) -> _Run | None:
        """The run of the container that ended (or is being settled) at or after `since`."""
        recent = self._recent_exits.get(container_id)
        if since and recent is not None and recent[0] >= since:
            return recent[1]
        return None

    @on(ExecInContainer)
    async def exec(self, command: ExecInContainer) -> ExecResult:
        """Run a process in a running container to completion (bounded output, timeout).
        `Conflict` when the container is not running."""
        from carte.handlers.containers._spec import resolve_user
        from carte.runtime.spec import User

        record = await self.records.resolve(command.ref)
        if record.state.status != "running":
            raise Conflict(
                f'cannot exec in container "{record.name}": it is not running '
                f"({record.state.status}); start it first (carte start {record.name})"
            )
        if not command.cmd:
            raise InvalidArgument("exec needs a command; e.g. carte exec NAME ls")
        paths = self.paths(record.id)
        wanted = command.user or record.config.user

        def image_user() -> User:
            layers = [Path(p) for p in _lowerdirs_of(paths)]
            return resolve_user(wanted, [paths.upper, *layers], record.config.group_add)

        # root needs no image files: a health probe (one every few seconds per container)
        # then costs no spec read and no thread.
        user = (
            await self._thread(image_user)
            if wanted or record.config.group_add
            else resolve_user("", [])
        )
        process = {
            "args": list(command.cmd),
            "env": [*record.config.env, *command.env],
            "cwd": command.workdir or record.config.workdir or "/",
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        }
        try:
            return await trio.to_thread.run_sync(
                lambda: run_exec(self.state_dir, record.id, process, command.timeout),
                abandon_on_cancel=True,
            )
        except ShimError as error:
            raise InvalidArgument(f'exec in container "{record.name}": {error.message}') from None


# --- small pieces ---------------------------------------------------------------------------


def _mark_stop_requested(record: ContainerRecord) -> None:
    record.stop_requested = True


def _end_restarting(record: ContainerRecord) -> None:
    """A restarting container stopped by a user (or found by a new daemon): exited again."""
    if record.state.status == "restarting":
        record.state = msgspec.structs.replace(record.state, status="exited", restarting=False)
        record.stop_requested = True


def _initial_health(config: ContainerConfig) -> Health | None:
    check = config.healthcheck
    if check is None or not check.test or check.test[0] == "NONE":
        return None
    return Health(status="starting")


def _merged_resources(current: Resources, change: Resources) -> Resources:
    """`current` with every field `change` sets (non-zero) replaced."""
    updates = {
        field: getattr(change, field)
        for field in change.__struct_fields__
        if getattr(change, field) not in (0, "", [], None)
    }
    return msgspec.structs.replace(current, **updates)


def _with_tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last or "@" in image else f"{image}:latest"


def _remove_directory(directory: Path) -> None:
    """Remove a container's directory, its shareable /dev/shm unmounted first."""
    unmount_shm(directory)
    shutil.rmtree(directory, ignore_errors=True)


def _write_bundle(paths: ContainerPaths, spec: object, record: ContainerRecord) -> None:
    """ROOT/containers/<id>/: config.json, empty rootfs mount point, upper and work, and the
    files bound over /etc/hostname, /etc/hosts and /etc/resolv.conf."""
    from carte.runtime.spec import Spec

    assert isinstance(spec, Spec)
    paths.directory.mkdir(mode=0o710)
    for directory in (paths.rootfs, paths.upper, paths.work):
        directory.mkdir()
    hostname = record.config.hostname or record.short_id
    paths.hostname_file.write_text(hostname + "\n")
    paths.hosts_file.write_text(_hosts_file(hostname, "127.0.1.1", record.config.extra_hosts))
    resolv = ""
    if record.config.network == "host":
        try:
            resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            resolv = ""
    if record.config.dns or record.config.dns_search:
        resolv = resolv_conf_text(record.config.dns, record.config.dns_search)
    paths.resolv_conf.write_text(resolv)
    (paths.directory / "config.json").write_bytes(encode_spec(spec))


def _hosts_file(
    hostname: str, address: str, extra_hosts: list[str] | None = None, gateway: str = ""
) -> str:
    return (
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{hostname}\n"
    ) + extra_hosts_text(extra_hosts or [], gateway)


def _rewrite(path: Path, text: str) -> None:
    """Rewrite a file in place (same inode), so a bind mount of it sees the new content."""
    with open(path, "r+") as file:
        file.truncate(0)
        file.write(text)


def _lowerdirs_of(paths: ContainerPaths) -> list[str]:
    from carte.runtime.spec import load_spec

    spec = load_spec(paths.directory / "config.json")
    for mount in spec.mounts:
        if mount.destination == "/" and mount.type == "overlay":
            for option in mount.options:
                if option.startswith("lowerdir="):
                    return option[len("lowerdir=") :].split(":")
    return []


def _start_exit_code(error: CarteError) -> int:
    text = error.message.lower()
    if "not found" in text or "no such file" in text:
        return 127
    if "permission denied" in text or "not executable" in text:
        return 126
    return 125


def _start_error(record: ContainerRecord, error: CarteError) -> CarteError:
    code = _start_exit_code(error)
    message = f'cannot start container "{record.name}": {error.message}'
    return InvalidArgument(f"{message} [exit {code}]") if code != 125 else type(error)(message)


async def _ignore_errors(awaitable: object) -> None:
    """Await best-effort cleanup; any `CarteError` or OSError is ignored."""
    try:
        await awaitable  # type: ignore[misc]
    except (CarteError, OSError):
        pass
