"""The dashboard's pages and its one action (scale), as routes of the ui handler.

Each page is rendered on the server from `_views` and the same bus commands the CLI's routes
send; scaling sends `ScaleService`, exactly what ``carte service scale`` posts to
``/v1/commands/ScaleService``. A failed command becomes an error page with its status (no
traceback, nothing half-done: the command itself is atomic).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import msgspec
from quart import Response, request

from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import (
    GetContainerStats,
    GetRollout,
    InspectContainer,
    ListContainers,
    ListPlacements,
    ListReplicas,
    ListServices,
    ListStacks,
    ScaleService,
)
from carte.api.events.base import event_name
from carte.engine.handler import Route
from carte.handlers.ui._assets import serve_asset
from carte.handlers.ui._html import esc, link, secure_headers, see_other, table
from carte.handlers.ui._logs import serve_logs
from carte.handlers.ui._views import Cluster, fact_details, gather_cluster, node_replicas, optional

if TYPE_CHECKING:
    from carte.handlers.ui._handler import UiHandler

Page = Callable[..., Awaitable[Response]]
EVENTS_SHOWN = 200
MIB = 1 << 20


def rendered(section: str) -> Callable[[Page], Page]:
    """A page whose failed command is shown as an error page with the command's status."""

    def wrap(serve: Page) -> Page:
        @functools.wraps(serve)
        async def guarded(ui: UiHandler, **params: Any) -> Response:
            try:
                return await serve(ui, **params)
            except CarteError as error:
                body = f'<p class="error">{esc(error.message)}</p>'
                return ui.page("Error", body, section=section, status=error.status)

        return guarded

    return wrap


def _quote(part: str) -> str:
    return quote(part, safe="")


def _per_node(counts: dict[str, int]) -> str:
    return ", ".join(f"{esc(node)}: {count}" for node, count in sorted(counts.items())) or "—"


async def serve_home(ui: UiHandler) -> Response:
    """The dashboard's front page: the nodes."""
    return see_other("/ui/nodes")


@rendered("nodes")
async def serve_nodes(ui: UiHandler) -> Response:
    """Nodes with their load, and where each service's replicas run."""
    cluster = await gather_cluster(ui.ctx.bus)
    totals = node_replicas(cluster)
    rows = []
    for node in sorted(cluster.nodes, key=lambda n: n.name):
        local = (
            node.name == cluster.local.name
            or not cluster.clustered
            or (node.name == cluster.status.name)
        )
        cpus = node.capacity.cpus or (cluster.local.cpus if local else 0)
        memory = node.capacity.memory or (cluster.local.memory_total if local else 0)
        shown = node.load or (cluster.local if local else None)  # its last heartbeat's
        load = (
            f'<span class="node-load">load {shown.load1:.2f} · '
            f"memory {shown.memory_percent:.0f} %</span>"
            if shown
            else "—"
        )
        badge = "ok" if node.status == "ready" else "bad"
        rows.append(
            [
                f'<span class="node-name">{esc(node.name)}</span>',
                esc(node.role),
                f'<span class="badge {badge}">{esc(node.status)}</span>',
                esc(node.availability),
                f"{cpus:g}",
                f"{memory / MIB:.0f} MiB" if memory else "—",
                f'<span class="node-replicas">{totals.get(node.name, 0)}</span>',
                load,
            ]
        )
    headers = ["Node", "Role", "Status", "Availability", "CPUs", "Memory", "Replicas", "Load"]
    body = table(headers, rows, empty="no nodes")
    body += "<h2>Replicas per node</h2>" + _replica_grid(cluster)
    if not cluster.clustered:
        body += '<p class="empty">Not in a cluster: this machine is the only node.</p>'
    return ui.page("Nodes", body, section="nodes", live=2.0)


def _replica_grid(cluster: Cluster) -> str:
    names = sorted(node.name for node in cluster.nodes)
    rows = [
        [esc(f"{stack}/{service}")] + [str(counts.get(name, 0)) for name in names]
        for (stack, service), counts in sorted(cluster.replicas.items())
    ]
    return table(["Service", *names], rows, empty="no replicas running")


@rendered("stacks")
async def serve_stacks(ui: UiHandler) -> Response:
    """Stacks and their services: replicas per node, rollout state, and a scale form each."""
    bus = ui.ctx.bus
    stacks = await bus.request(ListStacks())
    services = await bus.request(ListServices())
    cluster = await gather_cluster(bus)
    csrf = ui.csrf_token()
    body = ""
    if scaled := request.args.get("scaled"):
        body += f'<p class="flash">Scaled {esc(scaled)}.</p>'
    if not stacks:
        body += '<p class="empty">No stacks: deploy one with carte apply -f compose.yaml.</p>'
    for stack in sorted(stacks, key=lambda s: s.name):
        rows = []
        for service in sorted((s for s in services if s.stack == stack.name), key=lambda s: s.name):
            counts = cluster.replicas.get((service.stack, service.name), {})
            running = sum(counts.values()) if cluster.clustered else service.running
            target = f"/ui/stacks/{_quote(service.stack)}/{_quote(service.name)}"
            scale = (
                f'<form method="post" action="{target}/scale" class="scale">'
                f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
                f'<input type="number" name="replicas" min="0" value="{service.desired}" '
                f'aria-label="replicas of {esc(service.name)}">'
                "<button>Scale</button></form>"
            )
            rows.append(
                [
                    link(target, service.name),
                    esc(service.image),
                    f'<span class="desired">{service.desired}</span>',
                    f'<span class="running">{running}</span>',
                    str(service.ready),
                    str(service.revision),
                    link(target, service.rollout or "idle"),
                    f'<span class="per-node">{_per_node(counts)}</span>',
                    scale,
                ]
            )
        headers = [
            "Service",
            "Image",
            "Desired",
            "Running",
            "Ready",
            "Revision",
            "Rollout",
            "Replicas per node",
            "Scale",
        ]
        body += f'<h2 id="stack-{esc(stack.name)}">Stack {esc(stack.name)}</h2>'
        body += table(headers, rows, empty="no services")
    return ui.page("Stacks & services", body, section="stacks")


async def serve_scale(ui: UiHandler, stack: str, service: str) -> Response:
    """Scale a service (`ScaleService`, as ``carte service scale``); back to the stacks."""
    form = await request.form
    ui.require_csrf(form.get("csrf", ""))
    text = form.get("replicas", "").strip()
    try:
        replicas = int(text)
    except ValueError:
        replicas = -1
    try:
        if replicas < 0:
            raise InvalidArgument(f'replicas "{text}" is not a whole number >= 0; give one')
        await ui.ctx.bus.request(ScaleService(stack=stack, service=service, replicas=replicas))
    except CarteError as error:
        body = f'<p class="error">{esc(error.message)}</p><p>{link("/ui/stacks", "Back")}</p>'
        return ui.page("Scale failed", body, section="stacks", status=error.status)
    scaled = urlencode({"scaled": f"{stack}/{service} to {replicas}"})
    return see_other(f"/ui/stacks?{scaled}")


@rendered("stacks")
async def serve_service(ui: UiHandler, stack: str, service: str) -> Response:
    """One service: its live rollout (progress of the latest update) and its replicas."""
    bus = ui.ctx.bus
    rollout = await bus.request(GetRollout(stack=stack, service=service))
    placed = {
        p.name: p.node
        for p in await optional(bus, ListPlacements(stack=stack, service=service), [])
    }
    replicas = await bus.request(ListReplicas(stack=stack, service=service))
    total = max(rollout.total, 1)
    body = (
        '<dl class="rollout">'
        f'<dt>State</dt><dd class="rollout-state">{esc(rollout.state)}</dd>'
        f"<dt>Revision</dt><dd>{rollout.from_revision} → {rollout.revision}</dd>"
        f'<dt>Progress</dt><dd><progress max="{total}" value="{rollout.updated}"></progress> '
        f'<span class="rollout-progress">{rollout.updated}/{rollout.total}</span></dd>'
        f"<dt>Message</dt><dd>{esc(rollout.message) or '—'}</dd></dl>"
    )
    rows = [
        [
            link(f"/ui/containers/{_quote(r.container_id)}", r.name),
            str(r.revision),
            esc(r.status),
            "yes" if r.ready else "no",
            esc(placed.get(r.name, "")) or "this node",
            esc(r.ip),
        ]
        for r in replicas
    ]
    body += "<h2>Replicas</h2>" + table(
        ["Replica", "Revision", "Status", "Ready", "Node", "Address"], rows, empty="no replicas"
    )
    return ui.page(f"Service {stack}/{service}", body, section="stacks", live=1.0)


@rendered("containers")
async def serve_containers(ui: UiHandler) -> Response:
    """Every container on this daemon."""
    containers = await ui.ctx.bus.request(ListContainers(all=True))
    rows = [
        [
            link(f"/ui/containers/{_quote(c.id)}", c.name),
            esc(c.image),
            esc(c.state),
            esc(c.status),
            esc(c.health),
            esc(
                "/".join(
                    filter(
                        None, (c.labels.get("com.carte.stack"), c.labels.get("com.carte.service"))
                    )
                )
            ),
        ]
        for c in sorted(containers, key=lambda c: c.name)
    ]
    body = table(
        ["Name", "Image", "State", "Status", "Health", "Service"], rows, empty="no containers"
    )
    return ui.page("Containers", body, section="containers", live=3.0)


@rendered("containers")
async def serve_container(ui: UiHandler, ref: str) -> Response:
    """A container's details, its CPU and memory charts and its live log."""
    details = await ui.ctx.bus.request(InspectContainer(ref=ref))
    state = details.state
    path = f"/ui/containers/{_quote(details.id)}"
    facts = [
        ("Id", details.id[:12]),
        ("Image", details.image),
        ("State", state.status),
        ("Started", state.started_at or "—"),
        ("Restarts", details.restart_count),
    ]
    body = "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"
    body += (
        f'<h2>Resources</h2><div id="charts" class="charts" data-stats="{path}/stats.json">'
        + _chart("cpu", "CPU")
        + _chart("memory", "Memory")
        + "</div>"
        + '<h2>Log <span id="logs-state" class="badge">connecting</span></h2>'
        + f'<pre id="logs" data-logs="{path}/logs"></pre>'
    )
    return ui.page(f"Container {details.name}", body, section="containers")


def _chart(name: str, title: str) -> str:
    return (
        f'<div class="chart"><div>{esc(title)}: <span id="value-{name}">…</span></div>'
        f'<svg id="chart-{name}" viewBox="0 0 300 100" preserveAspectRatio="none" role="img" '
        f'aria-label="{esc(title)}"><text x="2" y="9"></text>'
        '<polyline points=""></polyline></svg></div>'
    )


async def serve_stats(ui: UiHandler, ref: str) -> Response:
    """One sample of a container's CPU and memory, for the page's charts (JSON)."""
    try:
        stats = await ui.ctx.bus.request(GetContainerStats(ref=ref))
        body, status = msgspec.json.encode(stats), 200
    except CarteError as error:
        body = msgspec.json.encode({"error": {"code": error.code, "message": error.message}})
        status = error.status
    response = Response(body, status=status, content_type="application/json")
    secure_headers(response)
    return response


@rendered("events")
async def serve_events(ui: UiHandler) -> Response:
    """The newest facts of the daemon's journal (what ``carte events --since`` replays)."""
    facts = ui.ctx.bus.journal.since(0.0)[-EVENTS_SHOWN:]
    rows = [
        [
            time.strftime("%H:%M:%S", time.gmtime(fact.time)),
            f'<span class="event-type">{esc(event_name(fact))}</span>',
            esc(fact.id),
            f"<code>{esc(fact_details(fact))}</code>",
        ]
        for fact in reversed(facts)
    ]
    body = table(["Time (UTC)", "Event", "Object", "Details"], rows, empty="no events yet")
    return ui.page("Events", body, section="events", live=2.0)


UI_ROUTES = (
    Route("GET", "/ui/", serve_home),
    Route("GET", "/ui/nodes", serve_nodes),
    Route("GET", "/ui/stacks", serve_stacks),
    Route("GET", "/ui/stacks/<stack>/<service>", serve_service),
    Route("POST", "/ui/stacks/<stack>/<service>/scale", serve_scale),
    Route("GET", "/ui/containers", serve_containers),
    Route("GET", "/ui/containers/<ref>", serve_container),
    Route("GET", "/ui/containers/<ref>/stats.json", serve_stats),
    Route("WEBSOCKET", "/ui/containers/<ref>/logs", serve_logs, streams=True),
    Route("GET", "/ui/events", serve_events),
    Route("GET", "/ui/assets/<name>", serve_asset),
)
