"""Handler "membership": this daemon's place in a cluster.

Every daemon runs it. Its role (``none``, ``control`` or ``worker``) comes from carte.yaml's
``cluster`` section under what init/join persisted (`_settings`):

* ``none``: it answers InitCluster (become a control plane) and JoinCluster (become a
  worker) and status; nothing else.
* ``control`` (needs ``store.backend: etcd``): answers the cluster routes (ca, join,
  heartbeat), tokens and node commands from etcd; heartbeats itself as a node; stands for
  election (`_leader.campaign`) and, while it leads, turns node lease expiries into
  NodeDown/NodeUp. `GetLeadership` / `LeaderElected` tell the other cluster handlers
  (the scheduler runs only on the leader).
* ``worker``: heartbeats its control plane every ``node_ttl / 3`` seconds with its node
  certificate. It never talks to etcd.

The role tasks run in a cancel scope of the handler's nursery, restarted when init, join or
leave changes the role. Each start publishes `ClusterConfigured` (the api handler serves TCP
from it).
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import replace
from pathlib import Path

import msgspec
import trio

from carte.api.cluster import (
    ClusterInitResult,
    ClusterStatus,
    Credentials,
    Heartbeat,
    JoinReply,
    JoinRequest,
    LeaderRecord,
    Leadership,
    NewToken,
    NodeRecord,
    TokenInfo,
)
from carte.api.errors import Conflict, InvalidArgument, Unavailable
from carte.api.events import (
    ClusterConfigured,
    CreateJoinToken,
    GetClusterStatus,
    GetLeadership,
    IdentifyPeer,
    InitCluster,
    InspectNode,
    JoinCluster,
    LeaderElected,
    LeadershipLost,
    LeaveCluster,
    ListJoinTokens,
    ListNodes,
    NodeDown,
    NodeJoined,
    NodeRemoved,
    NodeUp,
    NodeUpdated,
    RemoveNode,
    RevokeJoinToken,
    UpdateNode,
)
from carte.api.timestamps import now_rfc3339
from carte.cluster.pki import (
    Refused,
    make_csr,
    make_node_key,
    parse_join_token,
    pin_ca,
    write_bundle,
)
from carte.engine import Handler, HandlerContext, on
from carte.engine.store import Resync, Store, follow
from carte.handlers.cluster import _https
from carte.handlers.cluster._control import ControlPlane, identify_unrevoked
from carte.handlers.cluster._failover import ControlPlanes
from carte.handlers.cluster._leader import campaign, watch_nodes
from carte.handlers.cluster._routes import CLUSTER_ROUTES
from carte.handlers.cluster._settings import (
    Settings,
    forget_joined,
    load_settings,
    local_capacity,
    local_load,
    save_joined,
    source_address,
    split_address,
)


class MembershipHandler(Handler):
    """Cluster membership: join, tokens, node records and leases, leader election."""

    name = "membership"
    routes = CLUSTER_ROUTES
    catch_up = False

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.settings = load_settings(ctx.config.cluster, ctx.root)
        self.leadership = Leadership()
        self._control: ControlPlane | None = None
        self._nursery: trio.Nursery | None = None
        self._role_scope: trio.CancelScope | None = None
        self._changing = trio.Lock()

    # --- life -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish the settings and run the role's tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._configured()
            task_status.started()
            await trio.sleep_forever()

    async def _configured(self) -> None:
        """Tell the api handler, then (re)start the role's tasks."""
        settings = self.settings
        await self.ctx.bus.publish(
            ClusterConfigured(
                id=settings.name,
                role=settings.role,
                listen=settings.listen,
                insecure=settings.insecure,
                certs=str(settings.certs) if settings.has_bundle else "",
            )
        )
        if self._role_scope is not None:
            self._role_scope.cancel()
        scope = trio.CancelScope()
        self._role_scope = scope
        assert self._nursery is not None
        if settings.role == "control":
            self._nursery.start_soon(self._control_plane, scope)
        elif settings.role == "worker":
            self._nursery.start_soon(self._worker, scope)

    def control(self) -> ControlPlane:
        """The control-plane state; Conflict on a daemon that is not a control plane."""
        if self.settings.role != "control":
            raise Conflict(
                f'this daemon is not a control plane (role "{self.settings.role}"); '
                "ask one: carte -H tcp://CONTROL-PLANE:PORT ..."
            )
        if self._control is None:
            self._control = ControlPlane(self.ctx.store, self.settings.node_ttl)
        return self._control

    # --- control plane ----------------------------------------------------------------------

    async def _control_plane(self, scope: trio.CancelScope) -> None:
        with scope:
            control = self.control()
            me = LeaderRecord(name=self.settings.name, address=self.settings.listen)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._beat_self, control)
                nursery.start_soon(
                    campaign,
                    self.ctx.store,
                    me,
                    self.settings.leader_ttl,
                    self._leader_changed,
                    self._lead,
                    self.ctx.log,
                )

    async def _beat_self(self, control: ControlPlane) -> None:
        """A control plane is a node too: it keeps its own record alive."""
        period = self.settings.node_ttl / 3
        while True:
            try:
                await control.heartbeat(self.settings.name, local_capacity(), [], local_load())
            except Unavailable as error:
                self.ctx.log.warning("control plane heartbeat failed", extra={"error": error})
            await trio.sleep(period)

    async def _leader_changed(self, leader: str, fence: int) -> None:
        before = self.leadership
        self.leadership = Leadership(leader=leader, is_leader=fence > 0, fence=fence)
        if before.is_leader and not self.leadership.is_leader:
            await self.ctx.bus.publish(LeadershipLost(id=self.settings.name))
        if leader and (leader != before.leader or fence != before.fence):
            await self.ctx.bus.publish(LeaderElected(id=leader, is_self=fence > 0, fence=fence))

    async def _lead(self, fence: int) -> None:
        """While leading: watch node leases (cancelled when the lease is lost)."""
        control = self.control()

        async def down(name: str) -> None:
            self.ctx.log.warning("node down: its lease expired", extra={"node": name})
            await self.ctx.bus.publish(NodeDown(id=name))

        async def up(name: str) -> None:
            self.ctx.log.info("node up again", extra={"node": name})
            await self.ctx.bus.publish(NodeUp(id=name))

        await watch_nodes(control, down, up)

    async def admit(self, joining: JoinRequest) -> JoinReply:
        """POST /v1/cluster/join on a control plane."""
        reply, record = await self.control().join(joining)
        self.ctx.log.info("node joined", extra={"node": record.name})
        await self.ctx.bus.publish(NodeJoined(id=record.name, node=record))
        return reply

    @on(InitCluster)
    async def init_cluster(self, command: InitCluster) -> ClusterInitResult:
        async with self._changing:
            return await self._init(command)

    async def _init(self, command: InitCluster) -> ClusterInitResult:
        settings = self.settings
        if settings.role == "worker":
            raise Conflict(
                f"this daemon is a worker of {settings.server}; leave that cluster first"
            )
        if self.ctx.config.store.backend != "etcd":
            raise InvalidArgument(
                "a control plane keeps the cluster in etcd, and this daemon's store is "
                "SQLite; set store: {backend: etcd, endpoints: [...]} in carte.yaml and "
                "restart the daemon"
            )
        listen = command.listen or settings.listen
        if not listen:
            raise InvalidArgument(
                "the control plane needs a TCP address for nodes and clients; give "
                "--listen tcp://ADDR:PORT (or start the daemon with --listen)"
            )
        try:
            host, _ = split_address(listen)
        except ValueError:
            raise InvalidArgument(f'--listen "{listen}" is not tcp://ADDR:PORT') from None
        advertise = command.advertise or settings.advertise or host
        if advertise in ("0.0.0.0", "::", ""):
            raise InvalidArgument(
                f"{listen} listens on every address; give --advertise ADDR, the address "
                "nodes reach this control plane at"
            )
        name = command.name or settings.name
        port = split_address(listen)[1]
        api = f"tcp://[{advertise}]:{port}" if ":" in advertise else f"tcp://{advertise}:{port}"
        self.settings = replace(
            settings,
            role="control",
            name=name,
            server="",
            servers=(),
            listen=listen,
            advertise=advertise,
        )
        control = self.control()
        ca, created = await control.create_ca()
        server = await trio.to_thread.run_sync(lambda: ca.issue_server(name, [advertise]))
        assert server.key is not None
        write_bundle(settings.certs, ca=ca.cert_pem, cert=server.cert, key=server.key)
        admin = await trio.to_thread.run_sync(lambda: ca.issue_client(command.admin or "admin"))
        assert admin.key is not None
        token = ""
        if created:
            _, token = await control.create_token(rotate=False, ttl=0)
        now = now_rfc3339()
        record = NodeRecord(
            name=name,
            addresses=[advertise],
            capacity=local_capacity(),
            role="control",
            joined=now,
            seen=now,
            serial=f"{server.serial:x}",
            api=api,
        )
        await control.register(record)
        save_joined(self.ctx.root, self.settings)
        self.ctx.log.info(
            "cluster initialised" if created else "joined the cluster as a control plane",
            extra={"node": name, "listen": listen, "ca": ca.hash[:16]},
        )
        await self._configured()
        return ClusterInitResult(
            name=name,
            token=token,
            ca_hash=ca.hash,
            listen=listen,
            advertise=advertise,
            admin=Credentials(
                ca=ca.cert_pem.decode(), cert=admin.cert.decode(), key=admin.key.decode()
            ),
        )

    # --- worker -----------------------------------------------------------------------------

    @on(JoinCluster)
    async def join_cluster(self, command: JoinCluster) -> NodeRecord:
        async with self._changing:
            return await self._join(command)

    async def _join(self, command: JoinCluster) -> NodeRecord:
        settings = self.settings
        if settings.role != "none":
            where = settings.server or settings.listen
            raise Conflict(
                f"this daemon is already in a cluster (role {settings.role}, {where}); "
                "leave it first (carte node rm on the control plane, then ./install.sh "
                "--uninstall)"
            )
        parse_join_token(command.token)
        for server in (command.server, *command.servers):
            try:
                split_address(server)
            except ValueError:
                raise InvalidArgument(
                    f'--server "{server}" is not tcp://HOST:PORT; give the control plane\'s address'
                ) from None
        planes = ControlPlanes([command.server, *command.servers])
        name = command.name or settings.name
        answer = await planes.call(_https.unverified_context(), "GET", "/v1/cluster/ca")
        ca_pem = str(answer["ca"]).encode()
        pin_ca(command.token, ca_pem)
        address = (
            command.advertise
            or settings.advertise
            or source_address(*split_address(planes.current))
        )
        key = make_node_key()
        csr = make_csr(key, name, [address])
        capacity = local_capacity()
        joining = JoinRequest(
            token=command.token,
            name=name,
            csr=csr.decode(),
            addresses=[address],
            labels=command.labels,
            capacity=capacity,
        )
        reply = msgspec.convert(
            await planes.call(
                _https.pinned_context(ca_pem),
                "POST",
                "/v1/cluster/join",
                msgspec.to_builtins(joining),
            ),
            JoinReply,
        )
        write_bundle(settings.certs, ca=ca_pem, cert=reply.cert.encode(), key=key)
        planes.learn(reply.servers)
        self.settings = replace(
            settings,
            role="worker",
            name=name,
            server=planes.current,
            servers=tuple(planes.all()),
            advertise=address,
        )
        save_joined(self.ctx.root, self.settings)
        self.ctx.log.info(
            "joined the cluster", extra={"node": name, "servers": ",".join(planes.all())}
        )
        await self._configured()
        now = now_rfc3339()
        return NodeRecord(
            name=name,
            addresses=[address],
            labels=command.labels,
            capacity=capacity,
            role="worker",
            joined=now,
            seen=now,
        )

    async def _worker(self, scope: trio.CancelScope) -> None:
        """Heartbeat the control plane every node_ttl/3 s with the node certificate, failing
        over to another control plane when it cannot be reached; the control planes each
        answer names are remembered (joined.json)."""
        with scope:
            settings = self.settings
            planes = ControlPlanes([settings.server, *settings.servers])
            context = _https.pinned_context(
                (settings.certs / "ca.pem").read_bytes(), settings.certs
            )
            period = settings.node_ttl / 3
            beat = Heartbeat(
                name=settings.name,
                capacity=local_capacity(),
                addresses=[settings.advertise] if settings.advertise else [],
            )
            failing = ""
            while True:
                body = msgspec.to_builtins(msgspec.structs.replace(beat, load=local_load()))
                try:
                    reply = await planes.call(context, "POST", "/v1/cluster/heartbeat", body)
                    learned = planes.learn(reply.get("servers", []))
                    if learned or planes.current != self.settings.server:
                        self._remember(planes)
                    if failing:
                        self.ctx.log.info("heartbeat reaches the control plane again")
                    failing = ""
                except (Unavailable, Refused, Conflict) as error:
                    if str(error) != failing:
                        self.ctx.log.error("heartbeat failed", extra={"error": error})
                    failing = str(error)
                except Exception as error:  # one bad answer must not stop the heartbeats
                    self.ctx.log.error("heartbeat failed", extra={"error": error})
                await trio.sleep(period)

    def _remember(self, planes: ControlPlanes) -> None:
        """Persist the control planes a worker knows, the one in use first."""
        if planes.current != self.settings.server:
            self.ctx.log.warning(
                "control plane changed",
                extra={"before": self.settings.server, "now": planes.current},
            )
        self.settings = replace(self.settings, server=planes.current, servers=tuple(planes.all()))
        save_joined(self.ctx.root, self.settings)

    @on(LeaveCluster)
    async def leave_cluster(self, command: LeaveCluster) -> bool:
        async with self._changing:
            settings = self.settings
            drained = False
            if settings.role == "worker":
                drained = await self._ask_to_leave(settings, command.drain_timeout)
            elif settings.role == "control":
                raise Conflict(
                    "this daemon is a control plane; a control plane does not leave "
                    "(stop it: the others keep the cluster)"
                )
            forget_joined(self.ctx.root)
            self.settings = load_settings(self.ctx.config.cluster, self.ctx.root)
            self.leadership = Leadership()
            self._control = None
            self.ctx.log.info("left the cluster", extra={"drained": drained})
            await self._configured()
            return drained

    async def _ask_to_leave(self, settings: Settings, drain_timeout: float) -> bool:
        planes = ControlPlanes([settings.server, *settings.servers])
        context = _https.pinned_context((settings.certs / "ca.pem").read_bytes(), settings.certs)
        body = {"name": settings.name, "drain_timeout": drain_timeout}
        try:
            with trio.fail_after(drain_timeout + 30):
                await planes.call(context, "POST", "/v1/cluster/leave", body)
            return True
        except (Unavailable, Refused, trio.TooSlowError) as error:
            self.ctx.log.warning(
                "the control plane did not take the leave; leaving locally",
                extra={"error": error},
            )
            return False

    async def release(self, name: str, drain_timeout: float) -> bool:
        """POST /v1/cluster/leave: drain ``name``, wait (at most ``drain_timeout``) for its
        assignments to move off, then remove it and revoke its certificate. Whether it
        drained in time."""
        control = self.control()
        record = await control.update_member(
            name, lambda node: msgspec.structs.replace(node, availability="drain")
        )
        await self.ctx.bus.publish(NodeUpdated(id=name, node=record))
        prefix = f"cluster/assignments/{name}/"
        drained = False
        with trio.move_on_after(drain_timeout):
            await _until_empty(self.ctx.store, prefix)
            drained = True
        await control.remove(name, force=True)
        self.ctx.log.info("node left the cluster", extra={"node": name, "drained": drained})
        await self.ctx.bus.publish(NodeRemoved(id=name))
        return drained

    # --- tokens and status ------------------------------------------------------------------

    @on(CreateJoinToken)
    async def create_token(self, command: CreateJoinToken) -> NewToken:
        token_id, token = await self.control().create_token(rotate=command.rotate, ttl=command.ttl)
        return NewToken(id=token_id, token=token)

    @on(ListJoinTokens)
    async def list_tokens(self, command: ListJoinTokens) -> list[TokenInfo]:
        return await self.control().list_tokens()

    @on(RevokeJoinToken)
    async def revoke_token(self, command: RevokeJoinToken) -> TokenInfo:
        return await self.control().revoke_token(command.id)

    @on(GetLeadership)
    async def get_leadership(self, command: GetLeadership) -> Leadership:
        return self.leadership

    @on(GetClusterStatus)
    async def status(self, command: GetClusterStatus) -> ClusterStatus:
        settings = self.settings
        status = ClusterStatus(
            role=settings.role,  # type: ignore[arg-type]
            name=settings.name if settings.role != "none" else "",
            server=settings.server,
            servers=ControlPlanes([settings.server, *settings.servers]).all()
            if settings.role == "worker"
            else [],
            listen=settings.listen,
            leader=self.leadership.leader,
            is_leader=self.leadership.is_leader,
        )
        if settings.role == "worker":
            ca = _ca_hash(settings.certs / "ca.pem")
            return msgspec.structs.replace(status, ca_hash=ca)
        if settings.role != "control":
            return status
        control = self.control()
        nodes = await control.nodes()
        ready = sum(1 for node in nodes if node.status == "ready")
        return msgspec.structs.replace(
            status,
            ca_hash=(await control.ca()).hash,
            nodes=len(nodes),
            ready=ready,
            down=len(nodes) - ready,
        )

    @on(IdentifyPeer)
    async def identify_peer(self, command: IdentifyPeer) -> str:
        if self.settings.role == "control":
            return await self.control().identify(command.cert)
        return identify_unrevoked(command.cert)

    # --- nodes ------------------------------------------------------------------------------

    @on(ListNodes)
    async def list_nodes(self, command: ListNodes) -> list[NodeRecord]:
        return await self.control().nodes()

    @on(InspectNode)
    async def inspect_node(self, command: InspectNode) -> NodeRecord:
        return await self.control().node(command.name)

    @on(UpdateNode)
    async def update_node(self, command: UpdateNode) -> NodeRecord:
        for key in command.label_add:
            if not key or "=" in key:
                raise InvalidArgument(f'label key "{key}" is not valid; use --label-add KEY=VALUE')

        def change(record: NodeRecord) -> NodeRecord:
            labels = {k: v for k, v in record.labels.items() if k not in command.label_rm}
            labels.update(command.label_add)
            return msgspec.structs.replace(
                record,
                labels=labels,
                availability=command.availability or record.availability,
            )

        control = self.control()
        await control.update_member(command.name, change)
        record = await control.node(command.name)
        await self.ctx.bus.publish(NodeUpdated(id=record.name, node=record))
        return record

    @on(RemoveNode)
    async def remove_node(self, command: RemoveNode) -> None:
        await self.control().remove(command.name, force=command.force)
        self.ctx.log.info("node removed; its certificate is revoked", extra={"node": command.name})
        await self.ctx.bus.publish(NodeRemoved(id=command.name))


async def _until_empty(store: Store, prefix: str) -> None:
    """Return once no key starts with ``prefix`` (list, then watch)."""
    keys: set[str] = set()
    async with follow(store, prefix) as changes:
        async for item in changes:
            if isinstance(item, Resync):
                keys = {entry.key for entry in item.entries}
            elif item.deleted:
                keys.discard(item.key)
            else:
                keys.add(item.key)
            if not keys:
                return


def _ca_hash(path: Path) -> str:
    try:
        pem = path.read_text()
    except OSError:
        return ""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
