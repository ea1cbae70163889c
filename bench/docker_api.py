"""The Docker Engine API on Carte's socket against a private dockerd, with the same clients.

Interleaved, each round: `docker run --rm --network none bb true` and `docker exec` of `true`
in a running `sleep` container, through Carte's Docker socket and through dockerd (issue 17:
`run --rm` at most 0.5x dockerd's). Then docker-py's create + start + wait + remove loop of `LOOP`
containers against each, once (per-container time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from bench.peers import ENV, PeerFailed, Peers, run, timed
from bench.results import Result, interleave, median

NAME = "docker_api"
DEFAULT_RUNS = 10
LOOP = 100
RUN = ["docker", "run", "--rm", "--network", "none", "bb:latest", "true"]
EXEC = ["docker", "exec", "bench-exec", "true"]


def _carte_env(peers: Peers) -> dict[str, str]:
    """A Carte daemon with its Docker socket on, and the `docker` client's env for it."""
    socket = peers.work / "carte-docker.sock"
    peers.carte(config=f"handlers:\n  options:\n    docker:\n      socket: {socket}\n")
    peers.import_busybox("carte")
    return {**ENV, "DOCKER_HOST": f"unix://{socket}", "DOCKER_CONFIG": str(peers.work / "cfg")}


def _py_loop(host: str) -> float:
    """Seconds per container of docker-py's create, start, wait, remove."""
    import docker

    client = docker.DockerClient(base_url=host, version="auto")
    try:
        began = time.perf_counter()
        for _ in range(LOOP):
            container = client.containers.create("bb:latest", ["true"], network_mode="none")
            container.start()
            container.wait()
            container.remove()
        return (time.perf_counter() - began) / LOOP
    finally:
        client.close()


def measure(peers: Peers, runs: int) -> list[Result]:
    engines = {"carte": _carte_env(peers)}
    note = ""
    try:
        engines["dockerd"] = peers.docker()
        peers.import_busybox("docker")
    except PeerFailed as failure:
        note = f"dockerd skipped: {failure}"
    candidates: dict[str, Callable[[], float]] = {}
    for engine, env in engines.items():
        run(["docker", "run", "-d", "--network", "none", "--name", "bench-exec",
             "bb:latest", "sleep", "3600"], env)  # fmt: skip
        candidates[f"{engine} run"] = partial(timed, RUN, env)
        candidates[f"{engine} exec"] = partial(timed, EXEC, env)
    samples = interleave(candidates, runs)
    loops = {engine: _py_loop(env["DOCKER_HOST"]) for engine, env in engines.items()}
    for env in engines.values():
        run(["docker", "rm", "-f", "bench-exec"], env)
    other = "dockerd" in engines

    def row(measure: str, key: str, limit: float | None = None) -> Result:
        theirs = median(samples[f"dockerd {key}"]) if other else None
        return Result(
            NAME, measure, median(samples[f"carte {key}"]), "s", theirs, "dockerd" * other,
            limit=limit if other else None, runs=runs, samples=samples, note=note,
        )  # fmt: skip

    py_loop = f"docker-py create+start+wait+remove, per container ({LOOP} in a row)"
    return [
        row("`docker run --rm --network none bb true` via Carte's socket vs dockerd", "run", 0.5),
        row("`docker exec CONTAINER true` via Carte's socket vs dockerd", "exec"),
        Result(NAME, py_loop, loops["carte"], "s", loops.get("dockerd"), "dockerd" * other),
    ]
