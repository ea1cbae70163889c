"""The dashboard's only script and style sheet, served by the daemon (no CDN, no build step).

The script: refreshes ``main[data-live]`` in place, draws the CPU and memory charts of a
container page (inline SVG, polling ``data-stats``), and shows its live log from the WebSocket
named by ``data-logs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response

from carte.api.errors import NotFound

if TYPE_CHECKING:
    from carte.handlers.ui._handler import UiHandler

SCRIPT = r"""
"use strict";
(function () {
  const main = document.getElementById("main");
  const every = main ? Number(main.dataset.live || 0) : 0;
  if (every > 0) {
    setInterval(async function () {
      try {
        const reply = await fetch(location.href, {headers: {"X-Carte-Fragment": "1"},
                                                  credentials: "same-origin"});
        if (reply.redirected || reply.status === 401) { location.reload(); return; }
        if (reply.ok) { main.innerHTML = await reply.text(); }
      } catch (error) { /* the daemon restarts: try again next time */ }
    }, every);
  }

  const charts = document.getElementById("charts");
  if (charts) {
    const points = {cpu: [], memory: []};
    const keep = 60;
    function draw(name, values, floor, label) {
      const svg = document.getElementById("chart-" + name);
      const top = Math.max(floor, Math.max(...values) * 1.25);
      const span = Math.max(values.length - 1, 1);
      svg.querySelector("polyline").setAttribute("points", values.map(function (value, index) {
        const x = (index / span) * 300;
        const y = 100 - (value / top) * 95;
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" "));
      svg.querySelector("text").textContent = "max " + (name === "cpu" ? top.toFixed(1) + " %"
                                                        : (top / 1048576).toFixed(1) + " MiB");
      document.getElementById("value-" + name).textContent = label;
    }
    async function poll() {
      try {
        const reply = await fetch(charts.dataset.stats, {credentials: "same-origin"});
        if (!reply.ok) { return; }
        const stats = await reply.json();
        points.cpu.push(stats.cpu_percent);
        points.memory.push(stats.memory_usage);
        for (const name of ["cpu", "memory"]) {
          if (points[name].length > keep) { points[name].shift(); }
        }
        draw("cpu", points.cpu, 1, stats.cpu_percent.toFixed(1) + " %");
        const mib = (stats.memory_usage / 1048576).toFixed(1) + " MiB";
        const limit = stats.memory_limit > 0 ? stats.memory_limit : 0;
        draw("memory", points.memory, 1048576, limit ? mib + " of " +
             (limit / 1048576).toFixed(0) + " MiB" : mib);
        charts.dataset.samples = String(points.cpu.length);
      } catch (error) { /* next poll */ }
    }
    poll();
    setInterval(poll, 1500);
  }

  const logs = document.getElementById("logs");
  if (logs) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + logs.dataset.logs);
    const state = document.getElementById("logs-state");
    socket.onopen = function () { state.textContent = "live"; };
    socket.onclose = function () { state.textContent = "closed"; };
    socket.onmessage = function (message) {
      const entry = JSON.parse(message.data);
      if (entry.error) { state.textContent = entry.error; return; }
      const line = document.createElement("div");
      line.className = entry.stream;
      line.textContent = entry.log;
      logs.appendChild(line);
      while (logs.childNodes.length > 1000) { logs.removeChild(logs.firstChild); }
      logs.scrollTop = logs.scrollHeight;
    };
  }
})();
"""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f5f6f8; }
header { display: flex; align-items: center; gap: 1.5em; padding: .6em 1.5em;
         background: #1d2430; color: #fff; }
header .brand { font-weight: 700; letter-spacing: .05em; }
header nav a { color: #c9d3e3; margin-right: 1.2em; text-decoration: none; }
header nav a.current { color: #fff; border-bottom: 2px solid #5aa0ff; }
header .logout { margin-left: auto; }
h1 { font-size: 1.3em; margin: 1em 1.5em .4em; }
h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
main { padding: 0 1.5em 2em; }
table { border-collapse: collapse; background: #fff; min-width: 50%; }
th, td { text-align: left; padding: .35em .8em; border-bottom: 1px solid #e2e5ea; }
th { background: #eef1f5; font-weight: 600; }
.empty { color: #6b7280; }
.flash { background: #e7f5ea; border: 1px solid #9fd3ab; padding: .4em .8em; }
.error { background: #fdecec; border: 1px solid #f0a3a3; padding: .4em .8em; }
.badge { padding: .05em .5em; border-radius: .7em; background: #e2e5ea; }
.badge.ok { background: #d5f0dc; } .badge.bad { background: #f8d6d6; }
form.scale input { width: 4.5em; }
.charts { display: flex; gap: 2em; flex-wrap: wrap; }
.chart svg { width: 320px; height: 110px; background: #fff; border: 1px solid #e2e5ea; }
.chart polyline { fill: none; stroke: #2b6fd6; stroke-width: 1.5; }
.chart text { font-size: 8px; fill: #6b7280; }
pre#logs { background: #111720; color: #d8dee9; padding: .6em; height: 18em; overflow: auto;
           white-space: pre-wrap; }
pre#logs .stderr { color: #ffb4a8; }
progress { width: 20em; height: 1.2em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { font-weight: 600; }
"""

_ASSETS = {
    "ui.js": (SCRIPT, "text/javascript; charset=utf-8"),
    "ui.css": (STYLE, "text/css; charset=utf-8"),
}


async def serve_asset(handler: UiHandler, name: str) -> Response:
    """The dashboard's script or style sheet."""
    found = _ASSETS.get(name)
    if found is None:
        raise NotFound(f'no dashboard asset "{name}"')
    text, kind = found
    response = Response(text, content_type=kind)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response
