"""Density: COUNT containers with a health check every 2 s on one node, Carte then Docker.

For each engine in turn (not interleaved: each holds COUNT containers at once):
  start   COUNT `run -d --network none --health-cmd true --health-interval 2s` of a
          container that exits on SIGTERM, 20 clients at a time (target: <= 0.5x Docker);
  idle    the daemon's CPU over IDLE_SECONDS with all running, in % of one core (target: Carte
          <= 10 %; Docker's is dockerd + containerd), and its RSS (target: <= 80 MB);
  ps      `ps` listing all, and `inspect` of one, median of 9 (target: <= 1.5x Docker);
  stop    `stop` of all, 20 clients at a time (target: <= 0.5x Docker).
COUNT is CARTE_BENCH_DENSITY (default 500). Takes minutes; run it alone, never in tests:
    .venv/bin/python -m bench density --json density.json
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.peers import ENV, PeerFailed, Peers, pids_named, rss_mb, run, timed
from bench.results import Result, median

NAME = "density"
DEFAULT_RUNS = 5
COUNT = int(os.environ.get("CARTE_BENCH_DENSITY", "500"))
AT_A_TIME = 20
IDLE_SECONDS = 30
QUERIES = 9  # `ps` and `inspect` runs, their median kept: a busy machine's outliers
# busybox sh as PID 1 ignores SIGTERM unless it traps it: exit at once, as a real service would.
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
HEALTH = ["--health-cmd", "true", "--health-interval", "2s"]


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _in_parallel(task: Callable[[int], str], count: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(AT_A_TIME) as pool:
        outputs = list(pool.map(task, range(count)))
    return time.perf_counter() - started, outputs


def _engine(
    client: list[str], env: dict[str, str], daemon_pids: Callable[[], list[int]], image: str
) -> dict[str, float]:
    def start(index: int) -> str:
        argv = [*client, "run", "-d", "--network", "none", "--name", f"dense{index}", *HEALTH]
        return run([*argv, image, *COMMAND], env).strip()

    started, ids = _in_parallel(start, COUNT)
    time.sleep(5)  # the first health checks run
    pids = daemon_pids()
    cpu_before, wall_before = _cpu_seconds(pids), time.monotonic()
    time.sleep(IDLE_SECONDS)
    cpu = (_cpu_seconds(pids) - cpu_before) / (time.monotonic() - wall_before) * 100
    rss = sum(rss_mb(pid) for pid in pids)
    listing = median([timed([*client, "ps"], env) for _ in range(QUERIES)])
    inspect = median([timed([*client, "inspect", ids[COUNT // 2]], env) for _ in range(QUERIES)])
    stopped, _ = _in_parallel(lambda i: run([*client, "stop", ids[i]], env), COUNT)
    _in_parallel(lambda i: run([*client, "rm", "-f", ids[i]], env), COUNT)
    return {"start": started, "cpu": cpu, "rss": rss, "ps": listing, "inspect": inspect,
            "stop": stopped}  # fmt: skip


def measure(peers: Peers, runs: int) -> list[Result]:
    peers.import_busybox("carte")
    ours = _engine(peers.installed_carte(), ENV, lambda: [peers.carte_pid], "bb")
    print(f"   carte: {ours}", flush=True)  # kept in the log if Docker's side fails
    peers.stop_carte()  # its memory and CPU are out of Docker's way
    theirs: dict[str, float] = {}
    note = f"{COUNT} containers, health check every 2 s"
    try:
        docker = peers.docker()
        peers.import_busybox("docker")
        marker = str(peers.work)

        def docker_pids() -> list[int]:
            found = pids_named("dockerd") + pids_named("containerd")
            return [pid for pid in found if marker in " ".join(_cmdline(pid))]

        theirs = _engine(["docker"], docker, docker_pids, "bb:latest")
    except PeerFailed as failure:
        note += f"; docker: {failure}"

    def row(measure: str, key: str, unit: str, limit: float | None) -> Result:
        peer = "docker" if theirs else ""
        return Result(NAME, measure, ours[key], unit, theirs.get(key), peer,
                      limit=limit if theirs else None,
                      note=note if key == "start" else "")  # fmt: skip

    return [
        row(f"start {COUNT} containers, {AT_A_TIME} at a time, vs Docker", "start", "s", 0.5),
        Result(NAME, f"daemon CPU with {COUNT} running (% of one core)", ours["cpu"], "%",
               limit=10.0, note=f"docker (dockerd + containerd): {theirs.get('cpu', 0):.1f} %"),
        Result(NAME, f"daemon RSS with {COUNT} running", ours["rss"], "MB", limit=80.0,
               note=f"docker (dockerd + containerd): {theirs.get('rss', 0):.0f} MB"),
        row(f"`ps` of {COUNT} containers vs Docker", "ps", "s", 1.5),
        row(f"`inspect` of one among {COUNT} vs Docker", "inspect", "s", 1.5),
        row(f"stop {COUNT} containers, {AT_A_TIME} at a time, vs Docker", "stop", "s", 0.5),
    ]  # fmt: skip


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []
