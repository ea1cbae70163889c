"""Stack scale: apply and rolling updates of a replicated service, Carte against Swarm.

  apply 30     `carte apply` of a 30-replica service until `carte rollout status` says all are
               up, against `docker service create --replicas 30` (a single-node swarm on the
               private dockerd) until converged (target: <= 1.0x Swarm);
  update 10    a rolling update (parallelism 10, start-first, stop_signal SIGKILL) of a
               10-replica service, each until converged (target: <= 1.0x Swarm);
  update 100   Carte alone: the same update of a BIG-replica service (CARTE_BENCH_REPLICAS,
               default 100); target: within 2x of its number of batches times one batch (the
               update of 10 above: start + monitor + stop).
The replicas run `sleep` under a shell that exits on SIGTERM; no published ports (Swarm's
routing mesh needs IPVS, which this kernel lacks). Takes minutes; run it alone:
    .venv/bin/python -m bench stack_scale --json stack.json
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from bench.peers import PeerFailed, Peers, run
from bench.results import Result

NAME = "stack_scale"
DEFAULT_RUNS = 1
BIG = int(os.environ.get("CARTE_BENCH_REPLICAS", "100"))
MONITOR_S = 1.0
GRACE_S = 10.0
COMPOSE = """\
services:
  web:
    image: bb:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    stop_signal: SIGKILL
    stop_grace_period: {grace}s
    environment:
      REVISION: "{revision}"
    deploy:
      replicas: {replicas}
      update_config:
        parallelism: 10
        order: start-first
        monitor: {monitor}s
"""


def _poll(check: Callable[[], bool], what: str, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise PeerFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def _carte_apply(peers: Peers, carte: list[str], stack: str, replicas: int, revision: int) -> float:
    """Seconds from `carte apply` until the rollout is done and exactly `replicas` run, ready."""
    path = peers.work / f"{stack}.yaml"
    path.write_text(COMPOSE.format(grace=GRACE_S, revision=revision, replicas=replicas,
                                   monitor=MONITOR_S))  # fmt: skip

    def converged() -> bool:
        rows = json.loads(run([*carte, "--format", "json", "service", "ls", stack]))
        return any(
            row["name"] == "web" and str(row["revision"]) == str(revision)
            and row["rollout"] in (None, "", "completed")
            and row["running"] == row["ready"] == replicas
            for row in rows
        )  # fmt: skip

    started = time.perf_counter()
    run([*carte, "apply", "-f", str(path), "-n", stack])
    _poll(converged, f"carte stack {stack}")
    return time.perf_counter() - started


def _swarm(docker: dict[str, str], replicas: int) -> tuple[float, float]:
    """(create until all run, rolling update until completed) of a Swarm service, polled as
    Carte's are (the docker client's own wait adds a 5 s stability check)."""
    name = f"web{replicas}"

    def running() -> bool:
        listed = run(["docker", "service", "ls", "--filter", f"name={name}",
                      "--format", "{{.Replicas}}"], docker)  # fmt: skip
        return listed.strip() == f"{replicas}/{replicas}"

    def updated() -> bool:
        field = "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"
        state = run(["docker", "service", "inspect", "--format", field, name], docker)
        return state.strip() == "completed" and running()

    started = time.perf_counter()
    run(["docker", "service", "create", "--detach", "--quiet", "--name", name,
         "--replicas", str(replicas), "--update-parallelism", "10",
         "--update-order", "start-first", "--update-monitor", f"{MONITOR_S:g}s",
         "--stop-signal", "SIGKILL", "--stop-grace-period", f"{GRACE_S:g}s",
         "--env", "REVISION=1", "bb:latest",
         "sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"], docker)  # fmt: skip
    _poll(running, f"swarm service {name}")
    created = time.perf_counter() - started
    started = time.perf_counter()
    run(["docker", "service", "update", "--detach", "--quiet", "--env-add", "REVISION=2", name],
        docker)  # fmt: skip
    _poll(updated, f"swarm update of {name}")
    update = time.perf_counter() - started
    run(["docker", "service", "rm", name], docker)
    return created, update


def measure(peers: Peers, runs: int) -> list[Result]:
    carte = peers.carte()
    peers.import_busybox("carte")
    apply30 = _carte_apply(peers, carte, "s30", 30, 1)
    run([*carte, "stack", "rm", "s30"])
    _carte_apply(peers, carte, "s10", 10, 1)
    update10 = _carte_apply(peers, carte, "s10", 10, 2)
    run([*carte, "stack", "rm", "s10"])
    _carte_apply(peers, carte, "big", BIG, 1)
    update_big = _carte_apply(peers, carte, "big", BIG, 2)
    run([*carte, "stack", "rm", "big"])
    note = ""
    swarm: tuple[float, float] | None = None
    try:
        docker = peers.docker()
        peers.import_busybox("docker")
        run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], docker)
        create30, _ = _swarm(docker, 30)
        _, swarm_update10 = _swarm(docker, 10)
        swarm = (create30, swarm_update10)
    except PeerFailed as failure:
        note = f"swarm: {failure}"
    batches = -(-BIG // 10)
    floor = batches * update10  # one batch of 10: start + monitor + stop, as Carte does it
    peer = "swarm" if swarm else ""
    return [
        Result(NAME, "apply of 30 replicas until all up vs Swarm", apply30, "s",
               swarm[0] if swarm else None, peer, limit=1.0 if swarm else None, note=note),
        Result(NAME, "rolling update of 10 replicas (parallelism 10, start-first) vs Swarm",
               update10, "s", swarm[1] if swarm else None, peer,
               limit=1.0 if swarm else None),
        Result(NAME, f"rolling update of {BIG} replicas vs {batches} x one batch of 10",
               update_big, "s", floor, f"{batches} x the update of 10", limit=2.0,
               note="stop_signal SIGKILL: a stop must not wait the 10 s grace"),
    ]  # fmt: skip
