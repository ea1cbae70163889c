"""The cluster on one machine: 3 network-namespace nodes on a LAN bridge (one control plane
with a real etcd, two workers), busybox imported on each, every handler running.

    .venv/bin/python bench/cluster.py [--replicas 30] [--ttl 10] [--rss-replicas 100]
                                      [--no-swarm] [--json out.json]
    .venv/bin/python bench/cluster.py --up [--replicas 6]

``--up`` only brings the cluster up, deploys a stack of ``--replicas`` replicas across the three
nodes, prints `carte service ps` and the commands to drive each node, and keeps everything
running until Enter or Ctrl-C, when it removes it all.

Measured:
* ``apply_to_ready_s``: from `carte apply` of ``--replicas`` replicas to all of them ready
  (as `carte service ps` on the control plane reports them);
* ``store_writes_per_replica``: etcd revisions spent by that apply, per replica (every
  assignment, status and pending write counts; lease keep-alives do not);
* ``control_plane_rss_mib``: the control-plane daemon's RSS with the 3 nodes and
  ``--rss-replicas`` replicas placed and ready;
* ``update10_s``: a rolling update of a 10-replica service (parallelism 10, start-first,
  monitor 1 s, as bench/stack_scale.py asks of Swarm) until `carte rollout status` says
  completed and the 10 new replicas are ready;
* ``node_loss_to_replaced_s``: from kill -9 of a worker's daemon and its containers to the
  replicas ready again on the others, with a ``--ttl`` s node lease (goal: <= 15 s with 10 s).

Beside it, Docker Swarm on this machine (a private dockerd, `docker swarm init`, one node:
its managers cannot share the netns lab without a dockerd per namespace, and its routing
mesh and VIPs need IPVS, which this kernel lacks): ``swarm_apply_s`` (`docker service
create --replicas 30` until 30/30 run) and ``swarm_update10_s`` (the same update of 10), and
Carte's time over Swarm's for each (``*_vs_swarm``; Swarm places on one node, Carte over
three). `main()` returns the results as a dict.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from support.busybox import make_rootfs_tar  # noqa: E402
from support.cluster import SLEEPERS, ClusterLab, WorkloadLab  # noqa: E402
from support.leftovers import remove_leftovers  # noqa: E402

from bench.peers import PeerFailed, Peers, run  # noqa: E402
from bench.stack_scale import _swarm  # noqa: E402


def ready(lab: ClusterLab, exclude: str = "") -> int:
    listed = lab.carte(lab.nodes[0], "--format", "json", "service", "ps", "app_web", check=False)
    if listed.returncode != 0:
        return 0
    rows = json.loads(listed.stdout)
    return sum(1 for row in rows if row["ready"] and row["node"] and row["node"] != exclude)


def wait_for(what: str, check: Any, timeout: float) -> float:
    """Seconds until ``check()`` held; RuntimeError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def etcd_revision(lab: ClusterLab) -> int:
    assert lab.etcd is not None
    reply = lab.etcd.call("/v3/kv/range", {"key": "AA=="})
    header: dict[str, Any] = reply["header"]  # type: ignore[assignment]
    return int(header["revision"])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


UPDATE = """\
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    stop_signal: SIGKILL
    environment: {{REVISION: "{revision}"}}
    deploy:
      replicas: 10
      update_config: {{parallelism: 10, order: start-first, monitor: 1s}}
"""


def update10(lab: ClusterLab, work: Path) -> float:
    """Seconds of a rolling update of 10 replicas (see the module docstring)."""
    control = lab.nodes[0]
    compose = work / "update.yaml"

    def ready_at(revision: str) -> bool:
        listed = lab.carte(control, "--format", "json", "service", "ps", "upd_web", check=False)
        rows = json.loads(listed.stdout) if listed.returncode == 0 else []
        return sum(1 for r in rows if r["ready"] and r["revision"] == revision) == 10

    compose.write_text(UPDATE.format(revision=1))
    lab.carte(control, "apply", "-f", str(compose), "-n", "upd")
    wait_for("10 ready", lambda: ready_at("1"), 300)
    compose.write_text(UPDATE.format(revision=2))
    started = time.monotonic()
    lab.carte(control, "apply", "-f", str(compose), "-n", "upd")
    lab.carte(control, "rollout", "status", "--timeout", "300", "upd_web")
    wait_for("10 ready at revision 2", lambda: ready_at("2"), 300)
    took = round(time.monotonic() - started, 2)
    lab.carte(control, "stack", "rm", "upd")
    return took


def swarm(results: dict[str, Any]) -> None:
    """Swarm's apply of 30 and update of 10 (bench/stack_scale.py's), and Carte's ratios."""
    try:
        with Peers(prefix="carte-bench-cluster-swarm-") as peers:
            docker = peers.docker()
            peers.import_busybox("docker")
            run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], docker)
            results["swarm_apply_s"] = round(_swarm(docker, 30)[0], 2)
            results["swarm_update10_s"] = round(_swarm(docker, 10)[1], 2)
    except PeerFailed as failure:
        results["swarm"] = f"not measured: {failure}"
        return
    if results.get("replicas") == 30:
        results["apply_vs_swarm"] = round(results["apply_to_ready_s"] / results["swarm_apply_s"], 2)
    results["update10_vs_swarm"] = round(results["update10_s"] / results["swarm_update10_s"], 2)


def keep_up(lab: ClusterLab, compose: Path, replicas: int) -> None:
    """Deploy the stack, show where its replicas run and how to reach each node, then wait."""
    control = lab.nodes[0]
    lab.carte(control, "apply", "-f", str(compose), "-n", "app")
    wait_for("all replicas ready", lambda: ready(lab) == replicas, 300)
    print(lab.carte(control, "service", "ps", "app_web").stdout)
    print(lab.carte(control, "node", "ls", host=lab.server).stdout)
    print(f"control plane: {lab.server} (admin certificates in {lab.certs})")
    for node in lab.nodes:
        print(
            f"{node.name}: nsenter --net=/run/netns/{node.namespace} {sys.executable} -m carte "
            f"--host unix://{node.daemon.socket} ps"
        )
    print(f"  or from any node: CARTE_CERT_PATH={lab.certs} carte -H {lab.server} node ls")
    try:
        input("Enter or Ctrl-C removes the cluster. ")
    except (EOFError, KeyboardInterrupt):
        pass


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--rss-replicas", type=int, default=100)
    parser.add_argument("--json", default="")
    parser.add_argument("--up", action="store_true", help="bring the cluster up and keep it")
    parser.add_argument("--no-swarm", action="store_true", help="measure Carte only")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"nodes": 3, "replicas": args.replicas, "lease_s": args.ttl}
    work = Path(tempfile.mkdtemp(prefix="carte-bench-cluster-", dir="/tmp"))
    busybox = make_rootfs_tar(work / "busybox.tar", work)
    compose = work / "compose.yaml"
    with WorkloadLab(3, pool="10.95.0.0/16:24", node_ttl=args.ttl, leader_ttl=args.ttl) as lab:
        try:
            control = lab.nodes[0]
            lab.form()
            for node in lab.nodes:
                lab.carte(node, "import", str(busybox), "busybox:latest")

            compose.write_text(SLEEPERS.format(replicas=args.replicas, extra=""))
            if args.up:
                keep_up(lab, compose, args.replicas)
                return results
            before = etcd_revision(lab)
            started = time.monotonic()
            lab.carte(control, "apply", "-f", str(compose), "-n", "app")
            wait_for("all replicas ready", lambda: ready(lab) == args.replicas, 300)
            results["apply_to_ready_s"] = round(time.monotonic() - started, 2)
            time.sleep(1)  # the last status writes land
            writes = etcd_revision(lab) - before
            results["store_writes_per_replica"] = round(writes / args.replicas, 2)

            if args.rss_replicas:
                lab.carte(control, "service", "scale", f"app_web={args.rss_replicas}")
                wait_for("scaled up", lambda: ready(lab) == args.rss_replicas, 600)
                time.sleep(2)
                assert control.daemon.process is not None
                results["rss_replicas"] = args.rss_replicas
                results["control_plane_rss_mib"] = rss_mib(control.daemon.process.pid)
                lab.carte(control, "service", "scale", f"app_web={args.replicas}")
                wait_for(
                    "scaled down",
                    lambda: (
                        all(
                            len(n.daemon.client("ps", "-q").stdout.split()) <= args.replicas
                            for n in lab.nodes
                        )
                        and ready(lab) == args.replicas
                    ),
                    300,
                )

            results["update10_s"] = update10(lab, work)

            victim = lab.nodes[2]
            killed = time.monotonic()
            victim.daemon.stop(signal.SIGKILL)
            remove_leftovers(victim.daemon)
            wait_for(
                "replicas replaced",
                lambda: ready(lab, exclude=victim.name) == args.replicas,
                120,
            )
            results["node_loss_to_replaced_s"] = round(time.monotonic() - killed, 2)
        finally:
            lab.empty_and_stop()
    if not args.no_swarm and not args.up:
        swarm(results)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
