"""Handler "agent": every cluster node runs the replicas assigned to it.

It follows ``cluster/assignments/<this node>/`` — from the store on a control plane, over
the control plane's ``GET /v1/cluster/assignments`` stream (mutual TLS, the node's
certificate) on a worker — and converges the local containers with bus commands to the
containers handler: a missing replica is created (its image pulled, its network made, when
absent; ``network_mode: service:`` and ``volumes_from`` resolved to the local replicas of
those services) and started; one of another revision is replaced as the assignment's update
order says (stop-first; or start-first: the new copy starts under a spare name, the old one
goes once it is ready, and the new one takes the name), one that exited is replaced (with
a growing delay after failures, forgotten at a new revision); a managed container no
longer assigned is stopped and removed. Each pass reports the replicas' `ReplicaStatus`
(state, readiness, reason) when it changed.

Fencing: an assignment carries its scheduler's fence (leader revision); the agent never
replaces an assignment by one with an older fence.

Cut off from the control plane (stream broken or silent for three keep-alives), the agent
keeps what it last knew: its containers keep running and are healed. Once the stream is
back, its first line is a full resync, and whatever is no longer assigned is stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import h11
import msgspec
import trio

from carte.api.cluster import (
    ASSIGNMENT_LABEL,
    Assignment,
    FileContent,
    ReplicaStatus,
    ServiceFile,
)
from carte.api.containers import ContainerConfig, ContainerDetails, ContainerSummary, MountSpec
from carte.api.errors import CarteError, Conflict, NotFound, Unavailable
from carte.api.events import (
    ClusterConfigured,
    CreateNetwork,
    GetClusterStatus,
    ImageLoaded,
    InspectContainer,
    InspectImage,
    InspectNetwork,
    ListContainers,
    PullImage,
    ReadServiceFiles,
    RenameContainer,
    StopContainer,
)
from carte.api.stacks import SERVICE_LABEL, STACK_LABEL
from carte.api.timestamps import now_rfc3339
from carte.cluster.pki import Refused
from carte.engine import Handler, HandlerContext, on
from carte.engine.store import Change, Resync, follow
from carte.handlers.cluster import _https
from carte.handlers.cluster._assignments import ASSIGNMENTS, PING, write_statuses
from carte.handlers.cluster._failover import ControlPlanes
from carte.handlers.cluster._settings import split_address
from carte.handlers.stacks import create_and_start, remove_if_present
from carte.image.archive import load
from carte.image.store import ImageStore

PERIOD = 2.0
"""Seconds between convergence passes when nothing wakes the agent."""
ASSIGNMENT_REVISION_LABEL = "com.carte.cluster.revision"
_LOCAL_NETWORKS = frozenset({"", "default", "bridge", "host", "none"})
_MAX_BACKOFF = 30.0
_CONCURRENT_STARTS = 4
_CONNECT = 1.0
"""Seconds a connection attempt to the control plane may take (a SYN lost to a partition
is not waited for: the next attempt goes through once it heals)."""
_RECONNECT = 1.0
"""Longest pause between attempts to reopen the assignment stream."""


_Report = Callable[[list[ReplicaStatus]], Awaitable[None]]
"""Sends replica statuses to the control plane (or writes them, on one)."""


@dataclass(frozen=True)
class _Update:
    kind: Literal["resync", "put", "delete"]
    assignments: tuple[Assignment, ...] = ()
    name: str = ""


class AgentHandler(Handler):
    """Runs this node's assigned replicas (see the module docstring)."""

    name = "agent"
    requires = ("membership", "containers")

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.node = ""
        self.desired: dict[str, Assignment] = {}
        self.fences: dict[str, int] = {}
        self.synced = False
        self.linked = False
        """Whether the assignment source is up (the stream or the store watch)."""
        self._configured: ClusterConfigured | None = None
        self._changed = trio.Event()
        self._wake = trio.Event()
        self._reported: dict[str, ReplicaStatus] = {}
        self._details: dict[str, tuple[str, ContainerDetails]] = {}
        """container id -> (its state when inspected, what inspect said)."""
        self._failures: dict[str, tuple[int, float, str]] = {}
        """name -> (failures in a row, when to try again, last error)."""
        self._link: _Link | None = None
        """A worker's line to its control plane (None on a control plane)."""
        self._image_locks: dict[str, trio.Lock] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the role: idle without a cluster, else link and converge."""
        task_status.started()
        while True:
            configured = self._configured
            self._changed = trio.Event()
            if configured is None or configured.role not in ("control", "worker"):
                await self._changed.wait()
                continue
            async with trio.open_nursery() as nursery:

                async def stop_on_change() -> None:
                    await self._changed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_change)
                nursery.start_soon(self._serve_role, configured)

    @on(ClusterConfigured)
    async def configured(self, fact: ClusterConfigured) -> None:
        self._configured = fact
        self._changed.set()

    async def _serve_role(self, configured: ClusterConfigured) -> None:
        self.node = configured.id
        self.desired, self.synced, self._reported = {}, False, {}
        self.ctx.log.info("agent following its assignments", extra={"node": self.node})
        send, receive = trio.open_memory_channel[_Update](64)
        async with trio.open_nursery() as nursery:
            if configured.role == "control":
                self._link = None
                nursery.start_soon(self._from_store, send)
                report = self._report_to_store
            else:
                status = await self.ctx.bus.request(GetClusterStatus())
                link = _Link(ControlPlanes(status.servers), configured.certs, self.node)
                self._link = link
                nursery.start_soon(self._from_control_plane, link, send)
                report = link.report
            nursery.start_soon(self._apply_updates, receive)
            await self._converge_forever(report)

    # --- the assignment sources -------------------------------------------------------------

    async def _from_store(self, send: trio.MemorySendChannel[_Update]) -> None:
        prefix = f"{ASSIGNMENTS}{self.node}/"
        async with follow(self.ctx.store, prefix) as changes:
            async for item in changes:
                self.linked = True
                if isinstance(item, Resync):
                    found = tuple(entry.decode(Assignment) for entry in item.entries)
                    await send.send(_Update("resync", found))
                elif isinstance(item, Change) and item.value is not None:
                    assignment = msgspec.json.decode(item.value, type=Assignment)
                    await send.send(_Update("put", (assignment,)))
                elif isinstance(item, Change):
                    await send.send(_Update("delete", name=item.key.removeprefix(prefix)))

    async def _from_control_plane(self, link: _Link, send: trio.MemorySendChannel[_Update]) -> None:
        """Stream from the control plane forever, reconnecting with backoff; a control plane
        that cannot be reached is left for the next one the node knows."""
        delay, failing = 0.2, ""
        while True:
            try:
                async for update in link.assignments():
                    if not self.linked:
                        self.ctx.log.info("assignment stream open", extra={"node": self.node})
                    self.linked, delay, failing = True, 0.2, ""
                    await send.send(update)
                raise Unavailable("the control plane ended the assignment stream")
            except (Unavailable, Refused, Conflict, NotFound) as error:
                self.linked = False
                if str(error) != failing:
                    self.ctx.log.warning(
                        "assignment stream lost; keeping the running replicas",
                        extra={"error": error},
                    )
                failing = str(error)
                if isinstance(error, Unavailable):
                    link.planes.failed(link.where)
                    status = await self.ctx.bus.request(GetClusterStatus())
                    link.planes.learn(status.servers)
            await trio.sleep(delay)
            delay = min(delay * 2, _RECONNECT)

    async def _apply_updates(self, receive: trio.MemoryReceiveChannel[_Update]) -> None:
        async for update in receive:
            if update.kind == "resync":
                fresh = {}
                for assignment in update.assignments:
                    if assignment.fence >= self.fences.get(assignment.name, 0):
                        fresh[assignment.name] = assignment
                        self.fences[assignment.name] = assignment.fence
                self.desired, self.synced = fresh, True
            elif update.kind == "put":
                assignment = update.assignments[0]
                if assignment.fence < self.fences.get(assignment.name, 0):
                    self.ctx.log.warning(
                        "assignment from an older scheduler ignored",
                        extra={"replica": assignment.name, "fence": assignment.fence},
                    )
                    continue
                self.fences[assignment.name] = assignment.fence
                before = self.desired.get(assignment.name)
                if before is not None and before.revision != assignment.revision:
                    self._failures.pop(assignment.name, None)  # a new revision starts afresh
                self.desired[assignment.name] = assignment
            else:
                self.desired.pop(update.name, None)
            self._wake.set()

    # --- converging -------------------------------------------------------------------------

    async def _converge_forever(self, report: _Report) -> None:
        while True:
            self._wake = trio.Event()
            if self.synced:
                try:
                    statuses = await self.converge()
                    await self._report(report, statuses)
                except CarteError as error:
                    self.ctx.log.warning("agent pass failed", extra={"error": error})
            with trio.move_on_after(PERIOD):
                await self._wake.wait()

    async def converge(self) -> list[ReplicaStatus]:
        """One pass over the local replicas; the status of each assigned one. Replicas are
        stopped and started concurrently (a stop may wait out its stop timeout)."""
        rows = await self.ctx.bus.request(
            ListContainers(all=True, filters={"label": [ASSIGNMENT_LABEL]})
        )
        desired = dict(self.desired)
        copies: dict[str, list[ContainerSummary]] = {}
        gone: list[ContainerSummary] = []
        for row in rows:
            name = row.labels.get(ASSIGNMENT_LABEL, "")
            if name not in desired:
                gone.append(row)
            else:
                copies.setdefault(name, []).append(row)
        found: dict[str, ContainerSummary | None] = {}
        limiter = trio.CapacityLimiter(_CONCURRENT_STARTS)
        if gone:
            await self._forget_files()
        async with trio.open_nursery() as nursery:
            for row in gone:
                nursery.start_soon(self._retire, row, "no longer assigned to this node")
            for name, assignment in desired.items():
                have = copies.get(name, [])
                nursery.start_soon(self._converge_one, assignment, have, found, limiter)
        await self._inspect([row for row in found.values() if row is not None])
        return [self._status(assignment, found.get(name)) for name, assignment in desired.items()]

    async def _inspect(self, rows: list[ContainerSummary]) -> None:
        """Keep the details of ``rows`` (address, start or stop time) for their status: a
        container is inspected again only once its state moved."""
        kept: dict[str, tuple[str, ContainerDetails]] = {}
        for row in rows:
            known = self._details.get(row.id)
            if known is None or known[0] != row.state:
                try:
                    known = (row.state, await self.ctx.bus.request(InspectContainer(ref=row.id)))
                except NotFound:
                    continue  # removed meanwhile: the next pass no longer finds it
            kept[row.id] = known
        self._details = kept

    async def _replace_old(
        self, assignment: Assignment, copies: list[ContainerSummary], limiter: trio.CapacityLimiter
    ) -> tuple[ContainerSummary | None, bool]:
        """The copy of the assignment's revision, once copies of other revisions are dealt
        with: stopped first, or (start-first) kept until the new copy is ready; and whether
        an old copy is still there (holding the name). A second copy of the revision goes."""
        revision = assignment.revision
        current = [r for r in copies if r.labels.get(ASSIGNMENT_REVISION_LABEL) == revision]
        old = [r for r in copies if r not in current]
        for extra in current[1:]:
            await self._retire(extra, "a second copy")
        have = current[0] if current else None
        if not old:
            return have, False
        if assignment.order == "start-first" and have is None:
            async with limiter:
                have = await self._create(assignment, _spare_name(assignment))
        if assignment.order == "start-first" and not (have is not None and _ready(have)):
            return have, True
        for row in old:
            await self._retire(row, f"replaced by revision {revision}")
        if have is not None and have.name != assignment.name:
            try:
                await self.ctx.bus.request(RenameContainer(ref=have.id, name=assignment.name))
            except CarteError as error:
                self.ctx.log.info("replica not renamed", extra={"error": error.message})
        return have, False

    async def _converge_one(
        self,
        assignment: Assignment,
        copies: list[ContainerSummary],
        found: dict[str, ContainerSummary | None],
        limiter: trio.CapacityLimiter,
    ) -> None:
        name = assignment.name
        have, holding = await self._replace_old(assignment, copies, limiter)
        if have is not None and have.state in ("exited", "dead") and _done(assignment, have):
            found[name] = have  # its restart policy does not replace it
            return
        if have is not None and have.state in ("exited", "dead", "created"):
            self._failed(name, f"{have.name} {have.status.lower()}")
            await self._retire(have, "exited")
            have = None
        if have is None:
            async with limiter:
                have = await self._create(assignment, _spare_name(assignment) if holding else "")
        found[name] = have

    async def _create(self, assignment: Assignment, name: str = "") -> ContainerSummary | None:
        """Create and start the assignment's container (named ``name`` when given); None
        when it failed (the failure is kept for its status and a growing retry delay)."""
        failures, retry_at, _error = self._failures.get(assignment.name, (0, 0.0, ""))
        if failures and trio.current_time() < retry_at:
            return None
        try:
            config = msgspec.convert(assignment.request, ContainerConfig)
        except msgspec.ValidationError as error:
            self._failed(assignment.name, f"the assignment's request is not valid: {error}")
            return None
        labels = dict(config.labels)
        labels[ASSIGNMENT_LABEL] = assignment.name
        labels[ASSIGNMENT_REVISION_LABEL] = assignment.revision
        config = msgspec.structs.replace(config, labels=labels, name=name or config.name)
        try:
            config = await self._colocated(assignment, config)
            config = await self._with_files(assignment, config)
            await self._ensure_image(config.image)
            await self._ensure_network(config.network, assignment.stack)
            created = await create_and_start(self.ctx.bus, config)
        except CarteError as error:
            self._failed(assignment.name, error.message)
            self.ctx.log.warning(
                "replica not started", extra={"replica": assignment.name, "error": error.message}
            )
            return None
        self.ctx.log.info("replica started", extra={"replica": assignment.name})
        found = await self.ctx.bus.request(ListContainers(all=True, filters={"id": [created.id]}))
        if found and found[0].state == "running":
            self._failures.pop(assignment.name, None)
        return found[0] if found else None

    async def _colocated(self, assignment: Assignment, config: ContainerConfig) -> ContainerConfig:
        """``network_mode: service:NAME`` and ``volumes_from`` resolved to the replicas of
        those services running on this node (the scheduler placed this one beside them);
        Conflict while none runs here yet (the next pass tries again)."""
        if not assignment.joins and not assignment.mounts_from:
            return config

        async def local(service: str) -> str:
            rows = await self.ctx.bus.request(
                ListContainers(filters={"label": [f"{STACK_LABEL}={assignment.stack}"]})
            )
            for row in rows:
                if row.labels.get(SERVICE_LABEL) == service and ASSIGNMENT_LABEL in row.labels:
                    return row.id
            raise Conflict(
                f"{assignment.name} needs a running replica of {assignment.stack}_{service} "
                f"on node {self.node}; waiting for one"
            )

        if assignment.joins:
            config = msgspec.structs.replace(
                config, network=f"container:{await local(assignment.joins)}"
            )
        mounts = list(config.mounts)
        for entry in assignment.mounts_from:
            service, _, mode = entry.partition(":")
            lent = await self.ctx.bus.request(InspectContainer(ref=await local(service)))
            taken = {mount.target for mount in mounts}
            mounts += [
                msgspec.structs.replace(mount, read_only=mount.read_only or mode == "ro")
                for mount in lent.config.mounts
                if mount.target not in taken and mount.type != "tmpfs"
            ]
        return msgspec.structs.replace(config, mounts=mounts)

    async def _with_files(self, assignment: Assignment, config: ContainerConfig) -> ContainerConfig:
        """The assignment's secrets and configs: their content read from the control plane
        (mutual TLS; this node gets only its replicas'), written under the run root with their
        mode and owner, as on one machine, and bound read-only."""
        if not assignment.files:
            return config
        if self._link is None:
            contents = await self.ctx.bus.request(
                ReadServiceFiles(stack=assignment.stack, service=assignment.service)
            )
        else:
            target = f"/v1/cluster/files?node={quote(self.node)}&name={quote(assignment.name)}"
            with trio.fail_after(10):
                answer = await self._link.planes.call(self._link.context(), "GET", target)
            contents = msgspec.convert(answer, list[FileContent])
        found = {f"{c.kind}/{c.name}": c.content for c in contents}
        directory = self._files_dir(assignment.name)
        await trio.to_thread.run_sync(write_files, directory, assignment.files, found)
        mounts = [m for m in config.mounts if m.target not in {f.target for f in assignment.files}]
        mounts += [
            MountSpec(
                type="bind",
                source=str(directory / f.kind / f.name),
                target=f.target,
                read_only=True,
            )
            for f in assignment.files
        ]
        return msgspec.structs.replace(config, mounts=mounts)

    def _files_dir(self, name: str) -> Path:
        return self.ctx.run_root / "cluster-files" / name

    def _failed(self, name: str, error: str) -> None:
        failures, _, _ = self._failures.get(name, (0, 0.0, ""))
        delay = min(2.0**failures, _MAX_BACKOFF)
        self._failures[name] = (failures + 1, trio.current_time() + delay, error)

    async def _ensure_image(self, image: str) -> None:
        """The image here: fetched from the control plane (built or imported there), else
        pulled from its registry. One fetch per image at a time."""
        lock = self._image_locks.setdefault(image, trio.Lock())
        async with lock:
            try:
                await self.ctx.bus.request(InspectImage(ref=image))
                return
            except NotFound:
                pass
            if self._link is not None:
                try:
                    await self._fetch_image(self._link, image)
                    return
                except NotFound:
                    pass  # not on the control plane either: a registry's
                except (Unavailable, Refused, Conflict) as error:
                    self.ctx.log.warning(
                        "image not fetched from the control plane; pulling it",
                        extra={"image": image, "error": error},
                    )
            self.ctx.log.info("pulling image for a replica", extra={"image": image})
            try:
                await self.ctx.bus.request(PullImage(reference=image))
            except CarteError as error:
                raise NotFound(
                    f'image "{image}" is not on node {self.node} nor on the control plane, '
                    f"and could not be pulled ({error.message}); push it to a registry the "
                    "nodes reach"
                ) from None

    async def _fetch_image(self, link: _Link, image: str) -> None:
        """Download the image's archive from the control plane and load it here."""
        scratch = self.ctx.run_root / "cluster-images"
        await trio.to_thread.run_sync(lambda: scratch.mkdir(parents=True, exist_ok=True))
        archive = scratch / f"fetch-{secrets.token_hex(6)}.tar"
        try:
            started = trio.current_time()
            await link.download(f"/v1/cluster/image?name={quote(image)}", archive)
            loaded = await trio.to_thread.run_sync(load, ImageStore(self.ctx.root), archive)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(lambda: archive.unlink(missing_ok=True))
        self.ctx.log.info(
            "image fetched from the control plane",
            extra={"image": image, "seconds": round(trio.current_time() - started, 2)},
        )
        for stored in loaded:
            await self.ctx.bus.publish(ImageLoaded(id=stored.id, names=list(stored.names)))

    async def _ensure_network(self, network: str, stack: str) -> None:
        if network in _LOCAL_NETWORKS or ":" in network:
            return
        try:
            await self.ctx.bus.request(InspectNetwork(name=network))
        except NotFound:
            try:
                await self.ctx.bus.request(
                    CreateNetwork(name=network, labels={STACK_LABEL: stack} if stack else {})
                )
            except Conflict:
                pass  # made meanwhile

    async def _retire(self, row: ContainerSummary, why: str) -> None:
        """Stop (its stop timeout at most) and remove; a failure is logged, tried next pass."""
        self.ctx.log.info("stopping replica", extra={"replica": row.name, "reason": why})
        try:
            if row.state == "running":
                try:
                    await self.ctx.bus.request(StopContainer(ref=row.id))
                except (NotFound, Conflict):
                    pass
            await remove_if_present(self.ctx.bus, row.id)
        except CarteError as error:
            self.ctx.log.warning(
                "replica not stopped", extra={"replica": row.name, "error": error.message}
            )

    async def _forget_files(self) -> None:
        """Secrets and configs of replicas no longer assigned here go from the run root."""
        root = self.ctx.run_root / "cluster-files"
        keep = set(self.desired)

        def sweep() -> None:
            for folder in root.iterdir() if root.is_dir() else []:
                if folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)

        await trio.to_thread.run_sync(sweep)

    def _status(self, assignment: Assignment, row: ContainerSummary | None) -> ReplicaStatus:
        base = ReplicaStatus(
            node=self.node,
            name=assignment.name,
            revision=assignment.revision,
            updated=now_rfc3339(),
        )
        if row is None:
            failure = self._failures.get(assignment.name)
            if failure is not None:
                return msgspec.structs.replace(base, state="failed", reason=failure[2])
            return base
        state: Literal["pending", "running", "exited", "failed"] = (
            "running" if row.state in ("running", "paused", "restarting") else "exited"
        )
        ready = _ready(row)
        reason = "" if ready or row.state != "running" else f"health {row.health}"
        reported = msgspec.structs.replace(
            base,
            container_id=row.id,
            state=state,
            ready=ready,
            reason=reason,
            health="" if row.health == "none" else row.health,
        )
        known = self._details.get(row.id)
        if known is None:
            return reported
        details = known[1]
        return msgspec.structs.replace(
            reported,
            ip=next((e.ip_address for e in details.endpoints if e.ip_address), ""),
            since=details.state.started_at if state == "running" else details.state.finished_at,
            exit_code=details.state.exit_code,
        )

    async def _report(self, report: _Report, statuses: list[ReplicaStatus]) -> None:
        changed = [
            status
            for status in statuses
            if (before := self._reported.get(status.name)) is None
            or msgspec.structs.replace(before, updated="")
            != msgspec.structs.replace(status, updated="")
        ]
        if not changed:
            return
        try:
            await report(changed)
        except (Unavailable, Refused, Conflict) as error:
            self.ctx.log.info("replica status not reported yet", extra={"error": error})
            return
        for status in changed:
            self._reported[status.name] = status

    async def _report_to_store(self, statuses: list[ReplicaStatus]) -> None:
        await write_statuses(self.ctx.store, statuses)


class _Link:
    """A worker's line to its control plane: the assignment stream and status reports."""

    def __init__(self, planes: ControlPlanes, certs: str, node: str) -> None:
        self.planes = planes
        self.certs = certs
        self.node = node
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            directory = Path(self.certs)
            self._context = _https.pinned_context((directory / "ca.pem").read_bytes(), directory)
        return self._context

    async def report(self, statuses: list[ReplicaStatus]) -> None:
        body = [msgspec.to_builtins(status) for status in statuses]
        with trio.fail_after(10):
            await self.planes.call(self.context(), "POST", "/v1/cluster/status", body)

    async def download(self, target: str, dest: Path) -> None:
        """GET ``target`` into the file ``dest``; the server's error as a CarteError."""
        with trio.fail_after(600):
            async with self._get(target, "the download from") as (tls, connection):
                status, error = 0, bytearray()
                handle = await trio.open_file(dest, "wb")
                async with handle:
                    while True:
                        event = connection.next_event()
                        if event is h11.NEED_DATA:
                            connection.receive_data(bytes(await tls.receive_some(1 << 16)))
                        elif isinstance(event, h11.Response):
                            status = event.status_code
                        elif isinstance(event, h11.Data) and status >= 400:
                            error += event.data
                        elif isinstance(event, h11.Data):
                            await handle.write(bytes(event.data))
                        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                            break
                if status >= 400 or status == 0:
                    raise _https._error(status or 502, bytes(error))

    @property
    def where(self) -> str:
        """The control plane in use."""
        return self.planes.current

    async def _open(self) -> trio.SSLStream[trio.SocketStream]:
        where = self.where
        host, port = split_address(where)
        try:
            with trio.fail_after(_CONNECT):  # short: a healed link is taken at the next try
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as error:
            raise Unavailable(f"cannot reach the control plane at {where}: {error}") from None
        return trio.SSLStream(stream, self.context(), server_hostname=host)

    @asynccontextmanager
    async def _get(
        self, target: str, what: str
    ) -> AsyncIterator[tuple[trio.SSLStream[trio.SocketStream], h11.Connection]]:
        """A connection to the control plane with ``GET target`` sent, for reading the answer
        in the block; the connection breaking raises Unavailable ("WHAT <where> broke: ..."),
        and it is closed (forcefully, even when cancelled) when the block ends."""
        where = self.where
        host = split_address(where)[0]
        tls = await self._open()
        try:
            connection = h11.Connection(h11.CLIENT)
            headers = [("Host", host), ("Connection", "close")]
            request = connection.send(h11.Request(method="GET", target=target, headers=headers))
            await tls.send_all(request + (connection.send(h11.EndOfMessage()) or b""))
            yield tls, connection
        except (trio.BrokenResourceError, h11.RemoteProtocolError) as error:
            raise Unavailable(f"{what} {where} broke: {error}") from None
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(tls)

    async def assignments(self) -> AsyncIterator[_Update]:
        """The stream's updates until it breaks (Unavailable) or stays silent too long."""
        where = self.where
        target = f"/v1/cluster/assignments?node={quote(self.node)}"
        async with self._get(target, "the link to the control plane at") as (tls, connection):
            status, body, pending = 0, [], b""
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    with trio.move_on_after(3 * PING) as silent:
                        data = await tls.receive_some(65536)
                    if silent.cancelled_caught:
                        raise Unavailable(f"no word from the control plane at {where}")
                    connection.receive_data(bytes(data))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data) and status >= 400:
                    body.append(bytes(event.data))
                elif isinstance(event, h11.Data):
                    pending += bytes(event.data)
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        update = _decode_line(line)
                        if update is not None:
                            yield update
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    if status >= 400:
                        raise _https._error(status, b"".join(body))
                    return


def write_files(directory: Path, files: list[ServiceFile], contents: dict[str, bytes]) -> None:
    """Each file under ``directory/KIND/NAME`` (folders 0700) with its mode and owner, replaced
    atomically (a running replica never reads half a file)."""
    for item in files:
        folder = directory / item.kind
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = folder / f".{item.name}.partial"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        descriptor = os.open(partial, flags, 0o600)
        try:
            os.write(descriptor, contents.get(f"{item.kind}/{item.name}", b""))
            os.fchown(descriptor, item.uid, item.gid)
            os.fchmod(descriptor, item.mode)
        finally:
            os.close(descriptor)
        os.replace(partial, folder / item.name)


def _spare_name(assignment: Assignment) -> str:
    """A start-first copy's name while the old copy holds the replica's (renamed after)."""
    return f"{assignment.name}.{assignment.revision}"


def _ready(row: ContainerSummary) -> bool:
    return row.state == "running" and row.health in ("none", "healthy")


def _done(assignment: Assignment, row: ContainerSummary) -> bool:
    """Whether an exited replica stays as it is: restart "none", or "on-failure" after a
    clean exit ("Exited (0) ..." in its status)."""
    if assignment.restart == "none":
        return True
    return assignment.restart == "on-failure" and row.status.startswith("Exited (0)")


def _decode_line(line: bytes) -> _Update | None:
    if not line.strip():
        return None
    data = json.loads(line)
    if "resync" in data:
        found = tuple(msgspec.convert(item, Assignment) for item in data["resync"])
        return _Update("resync", found)
    if "put" in data:
        return _Update("put", (msgspec.convert(data["put"], Assignment),))
    if "delete" in data:
        return _Update("delete", name=str(data["delete"]))
    return None  # {"ping": true}
