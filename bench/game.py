"""The game server of config/examples/game on Carte and on Docker, same machine, same run.

    .venv/bin/python bench/game.py [--seconds 10] [--rate 100] [--json out.json]

Both engines get the same Debian base tar (make-base.sh, cached) and the same two build
contexts. Measured for each: import of the base; build of the web and db images cold
(no cache), cached (unchanged) and with one file changed; deploy-to-ready of 4 web + 4 db;
requests/s of an uncapped load (`--seconds`) and then, with the load capped at `--rate`
requests/s, the failed requests of each operation: rolling update of the web tier, kill -9
of a web replica, restart of db1, scale 4->6->4, SIGKILL of the engine's daemon.

Carte deploys compose.yaml (one published port, its VIP balancing); Docker gets plain
`docker run` of 4 + 4 on a user network with one published port per web replica (Swarm's
routing mesh needs IPVS, which this kernel lacks), updated one replica at a time
(stop, then run the new one on the same port). `main()` returns the results as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GAME = REPO / "config" / "examples" / "game"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(GAME))

from load import Load, summary  # noqa: E402

from bench.peers import ENV, Peers, run  # noqa: E402

CARTE_CONFIG = 'network:\n  pools: ["10.98.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
CARTE_PORT = 18741
DOCKER_PORTS = [18751, 18752, 18753, 18754]
DOCKER_SUBNET = "10.215.0.0/24"


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return round(time.perf_counter() - started, 2)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def contexts(work: Path) -> dict[str, Path]:
    """Private copies of the build contexts (the one-file change must not touch the repo)."""
    made = {}
    for name in ("web", "db"):
        made[name] = work / name
        shutil.copytree(GAME / name, made[name])
    return made


def change_one_file(web: Path, version: str) -> None:
    (web / "VERSION").write_text(f"{version}\n")


class Phases:
    """Runs the capped load through named phases; `results()` summarises each."""

    def __init__(self, ports: int | list[int], ledger: Path, rate: float) -> None:
        self.load = Load(ports, ledger, workers=6, rate=rate, prefix="q")
        self.spans: dict[str, tuple[float, float]] = {}
        self.errors: dict[str, str] = {}

    def __enter__(self) -> Phases:
        self.load.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.load.stop()

    def phase(self, name: str, action: Callable[[], object], settle: float = 2.0) -> None:
        started = time.monotonic()
        try:
            action()
        except Exception as error:  # the phase is reported as failed, the others still run
            self.spans[name] = (started, time.monotonic())
            self.errors[name] = str(error)[:200]
            return
        time.sleep(settle)
        self.spans[name] = (started, time.monotonic())

    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (since, until) in self.spans.items():
            row = summary(self.load.results, since, until)
            out[name] = {
                "requests": row["requests"],
                "failed": row["failed"],
                "errors": row["errors"][:2],
            }
            if name in self.errors:
                out[name]["phase_error"] = self.errors[name]
        return out


def uncapped(ports: int | list[int], ledger: Path, seconds: float) -> dict[str, Any]:
    load = Load(ports, ledger, workers=8, seconds=seconds, prefix="u").start()
    load.wait()
    row = summary(load.results)
    return {"requests_per_second": row["requests_per_second"], "failed": row["failed"]}


# --- Carte -----------------------------------------------------------------------------------


def run_carte(
    peers: Peers, base_tar: str, work: Path, seconds: float, rate: float, out: dict[str, Any]
) -> dict[str, Any]:
    carte = peers.carte(CARTE_CONFIG)
    env = {**ENV, "GAME_PORT": str(CARTE_PORT)}
    ctx = contexts(work / "carte")
    out["import base"] = timed(lambda: run([*carte, "import", base_tar, "game-base:bookworm"]))
    out["build web cold"] = timed(
        lambda: run([*carte, "build", "--no-cache", "-t", "game-web:1", str(ctx["web"])])
    )
    out["build db cold"] = timed(
        lambda: run([*carte, "build", "--no-cache", "-t", "game-db:1", str(ctx["db"])])
    )
    out["build web cached"] = timed(
        lambda: run([*carte, "build", "-t", "game-web:1", str(ctx["web"])])
    )
    change_one_file(ctx["web"], "2")
    out["build web one file changed"] = timed(
        lambda: run([*carte, "build", "-t", "game-web:2", str(ctx["web"])])
    )

    def ready(service: str, n: int) -> Callable[[], bool]:
        def check() -> bool:
            rows = json.loads(run([*carte, "--format", "json", "service", "ps", f"game_{service}"]))
            return len(rows) == n and all(r["ready"] for r in rows)

        return check

    def deploy() -> None:
        run([*carte, "apply", "-f", str(GAME / "compose.yaml")], env)
        wait_for(ready("web", 4), 120, "4 ready web replicas")
        wait_for(lambda: answers(CARTE_PORT), 30, "the published port")

    out["deploy to ready"] = timed(deploy)
    out["uncapped load"] = uncapped(CARTE_PORT, work / "carte-ledger.jsonl", seconds)

    def rolling_update() -> None:
        run([*carte, "apply", "-f", str(GAME / "compose.yaml")], {**env, "WEB_TAG": "2"})
        run([*carte, "rollout", "status", "game_web", "--timeout", "180"])

    def kill_replica() -> None:
        victim = json.loads(run([*carte, "--format", "json", "service", "ps", "game_web"]))[0]
        details = json.loads(run([*carte, "--format", "json", "inspect", victim["container_id"]]))
        details = details[0] if isinstance(details, list) else details
        os.kill(details["state"]["pid"], signal.SIGKILL)
        time.sleep(1)
        wait_for(ready("web", 4), 60, "a replacement web replica")

    def restart_db() -> None:
        (db,) = json.loads(run([*carte, "--format", "json", "service", "ps", "game_db1"]))
        run([*carte, "restart", db["container_id"]])
        wait_for(ready("db1", 1), 60, "db1 ready again")

    def scale() -> None:
        run([*carte, "service", "scale", "game_web=6"])
        wait_for(ready("web", 6), 90, "6 ready web replicas")
        run([*carte, "service", "scale", "game_web=4"])
        wait_for(ready("web", 4), 90, "4 web replicas")

    def kill_daemon() -> None:
        pid = peers.carte_pid
        os.kill(pid, signal.SIGKILL)
        reap(peers, pid)
        time.sleep(3)
        peers._carte = None  # start it again, as a supervisor would
        peers.carte(CARTE_CONFIG)

    with Phases(CARTE_PORT, work / "carte-ledger.jsonl", rate) as phases:
        phases.phase("baseline", lambda: time.sleep(5), settle=0)
        phases.phase("rolling update", rolling_update)
        phases.phase("kill -9 web replica", kill_replica)
        phases.phase("restart db1", restart_db)
        phases.phase("scale 4-6-4", scale)
        phases.phase("daemon SIGKILL", kill_daemon, settle=3)
    out["phases"] = phases.results()
    networks = json.loads(run([*carte, "--format", "json", "network", "ls"]))
    run([*carte, "stack", "rm", "game"])
    peers.stop_carte()
    remove_carte_host_state(work / "..", [n["bridge"] for n in networks if n.get("bridge")], peers)
    return out


def remove_carte_host_state(_: Path, bridges: list[str], peers: Peers) -> None:
    """The bench daemon's nft tables and bridges (a daemon keeps them when it stops)."""
    from carte.handlers.network import nft_table_name

    table = nft_table_name(peers.work / "carte-root")
    for name in (table, f"{table}-lb"):
        subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True, check=False)
    for bridge in bridges:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


# --- Docker ----------------------------------------------------------------------------------


def run_docker(
    peers: Peers, base_tar: str, work: Path, seconds: float, rate: float, out: dict[str, Any]
) -> dict[str, Any]:
    env = {**peers.docker(), "DOCKER_BUILDKIT": "0"}
    ctx = contexts(work / "docker")

    def docker(*args: str) -> str:
        return run(["docker", *args], env)

    out["import base"] = timed(lambda: docker("import", base_tar, "game-base:bookworm"))
    out["build web cold"] = timed(
        lambda: docker("build", "-q", "--no-cache", "-t", "game-web:1", str(ctx["web"]))
    )
    out["build db cold"] = timed(
        lambda: docker("build", "-q", "--no-cache", "-t", "game-db:1", str(ctx["db"]))
    )
    out["build web cached"] = timed(
        lambda: docker("build", "-q", "-t", "game-web:1", str(ctx["web"]))
    )
    change_one_file(ctx["web"], "2")
    out["build web one file changed"] = timed(
        lambda: docker("build", "-q", "-t", "game-web:2", str(ctx["web"]))
    )

    def run_web(number: int, tag: str) -> None:
        docker("run", "-d", "--name", f"web{number}", "--network", "game", "--restart", "always",
               "-p", f"127.0.0.1:{18750 + number}:8000", f"game-web:{tag}")  # fmt: skip

    def deploy() -> None:
        docker("network", "create", "--subnet", DOCKER_SUBNET, "game")
        for n in range(1, 5):
            docker("run", "-d", "--name", f"db{n}", "--network", "game", "--restart", "always",
                   "-v", f"db{n}-data:/data", "game-db:1")  # fmt: skip
        for n in range(1, 5):
            run_web(n, "1")
        for port in DOCKER_PORTS:
            wait_for(lambda port=port: answers(port), 60, f"web on port {port}")  # type: ignore[misc]

    out["deploy to ready"] = timed(deploy)
    out["uncapped load"] = uncapped(DOCKER_PORTS, work / "docker-ledger.jsonl", seconds)

    def rolling_update() -> None:
        for n in range(1, 5):
            docker("rm", "-f", f"web{n}")
            run_web(n, "2")
            wait_for(lambda n=n: answers(18750 + n), 60, f"web{n} updated")  # type: ignore[misc]

    def kill_replica() -> None:
        # kill -9 of the process, as a crash would be (`docker kill` counts as a manual stop,
        # which the restart policy then leaves alone).
        os.kill(int(docker("inspect", "-f", "{{.State.Pid}}", "web1")), signal.SIGKILL)
        wait_for(lambda: answers(DOCKER_PORTS[0]), 60, "web1 restarted")

    def scale() -> None:
        for n in (5, 6):
            run_web(n, "2")
        for n in (5, 6):
            wait_for(lambda n=n: answers(18750 + n), 60, f"web{n}")  # type: ignore[misc]
        docker("rm", "-f", "web5", "web6")

    def kill_daemon() -> None:
        pid = int((peers.work / "docker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        reap(peers, pid)  # a zombie's pid in docker.pid would stop the next dockerd
        time.sleep(3)
        peers._docker_env = None  # start it again, as a supervisor would
        env.update(peers.docker())
        wait_for(lambda: all(answers(port) for port in DOCKER_PORTS), 60, "web after dockerd")

    with Phases(DOCKER_PORTS, work / "docker-ledger.jsonl", rate) as phases:
        phases.phase("baseline", lambda: time.sleep(5), settle=0)
        phases.phase("rolling update", rolling_update)
        phases.phase("kill -9 web replica", kill_replica)
        phases.phase("restart db1", lambda: docker("restart", "db1"))
        phases.phase("scale 4-6-4", scale)
        phases.phase("daemon SIGKILL", kill_daemon, settle=3)
    out["phases"] = phases.results()
    names = docker("ps", "-aq").split()
    if names:
        docker("rm", "-f", *names)
    docker("network", "rm", "game")
    return out


def reap(peers: Peers, pid: int) -> None:
    for process in peers._processes:
        if process.pid == pid:
            process.wait(10)


def reap_docker_leftovers(work: Path) -> None:
    """Containers of a private dockerd that did not come back after its SIGKILL: their shims
    (named by the private exec root) and what runs under them, and the game network's bridge."""
    mine = str(work / "docker-exec")
    for shim in Path("/proc").iterdir():
        try:
            argv = (shim / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"containerd-shim-runc-v2") or mine.encode() not in b" ".join(argv):
            continue
        children = (shim / "task" / shim.name / "children").read_text().split()
        for pid in [*children, shim.name]:
            subprocess.run(["kill", "-9", pid], capture_output=True, check=False)
    for line in subprocess.run(
        ["ip", "-o", "addr"], capture_output=True, text=True
    ).stdout.splitlines():
        if DOCKER_SUBNET.rsplit(".", 1)[0] + ".1/" in line:
            subprocess.run(
                ["ip", "link", "delete", line.split()[1]], capture_output=True, check=False
            )


def table(results: dict[str, Any]) -> str:
    carte, docker = results["carte"], results["docker"]
    lines = [f"{'':34}{'Carte':>12}{'Docker':>12}{'ratio':>8}"]
    for key in ("import base", "build web cold", "build db cold", "build web cached",
                "build web one file changed", "deploy to ready"):  # fmt: skip
        a, b = carte.get(key), docker.get(key)
        ratio = f"{a / b:.2f}x" if isinstance(a, float) and isinstance(b, float) and b else ""
        lines.append(f"{key + ' (s)':34}{a!s:>12}{b!s:>12}{ratio:>8}")
    a = carte.get("uncapped load", {}).get("requests_per_second")
    b = docker.get("uncapped load", {}).get("requests_per_second")
    ratio = f"{a / b:.2f}x" if a and b else ""
    lines.append(f"{'requests/s (uncapped)':34}{a!s:>12}{b!s:>12}{ratio:>8}")
    for name in carte.get("phases", {}):
        a_row, b_row = carte["phases"][name], docker.get("phases", {}).get(name, {})
        a_cell = f"{a_row['failed']}/{a_row['requests']}"
        b_cell = f"{b_row.get('failed', '-')}/{b_row.get('requests', '-')}"
        lines.append(f"{'failed: ' + name:34}{a_cell:>12}{b_cell:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="uncapped load per engine")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s during operations")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--engines", nargs="+", default=["carte", "docker"])
    args = parser.parse_args(argv)
    base_tar = run([str(GAME / "make-base.sh"), "--tar-only"]).strip()
    work = Path(tempfile.mkdtemp(prefix="carte-bench-game-", dir="/tmp"))
    results: dict[str, Any] = {"carte": {}, "docker": {}}
    try:
        with Peers() as peers:
            for engine in args.engines:
                measure = run_carte if engine == "carte" else run_docker
                try:
                    measure(peers, base_tar, work, args.seconds, args.rate, results[engine])
                except Exception as error:  # reported; the other engine still runs
                    results[engine]["error"] = str(error)[:300]
                finally:
                    if engine == "docker":
                        reap_docker_leftovers(peers.work)
                print(json.dumps({engine: results[engine]}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
