"""The overlay between cluster nodes: 3 network-namespace nodes on a LAN bridge (a control
plane with a real etcd, two workers), busybox imported on each, every handler running.

    .venv/bin/python bench/overlay.py [--seconds 4] [--rounds 3] [--requests 2000]
                                      [--json out.json]

Measured (iperf3 from the host, apt-get install iperf3, run inside the containers' network
namespaces; a small Python request/response client and server likewise):
* ``*_gbps``: TCP throughput, median of ``--rounds`` runs of ``--seconds`` s, between
  ``same_node`` (two containers of one overlay network on node1), ``cross_node`` (node1 to
  node2 over Carte's VXLAN) and ``bare_vxlan`` (two namespaces on node1 and node2 joined by
  a hand-made bridge + VXLAN device with the same MTU, no Carte, no nftables);
  ``cross_vs_bare`` is their ratio (goal >= 0.9);
* ``*_rtt_us``: median round-trip time of a 64-byte request and its answer on one TCP
  connection, the same three paths;
* ``vip_after_ready_s``: a service scaled from one replica (node2) to two; from the new
  replica (node3) shown ready by `carte service ps` to a client on node1 first served by it
  through the service's VIP (negative: served before ps showed it ready).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from support.busybox import make_rootfs_tar  # noqa: E402
from support.cluster import LabNode, WorkloadLab  # noqa: E402

from bench.results import emit  # noqa: E402

PORT = 5201
ECHO_PORT = 5300
SERVE = "echo served-by-$(hostname) > /index.html && exec httpd -f -p 80 -h /"
STACK = f"""\
services:
  web:
    deploy:
      replicas: {{replicas}}
      placement:
        constraints: [node.labels.web==yes]
        max_replicas_per_node: 1
    image: busybox:latest
    command: ["sh", "-c", "{SERVE}"]
"""
ECHO = textwrap.dedent(
    """
    import socket, sys, time
    if sys.argv[1] == "serve":
        listener = socket.create_server(("0.0.0.0", int(sys.argv[2])))
        conn, _ = listener.accept()
        while data := conn.recv(64):
            conn.sendall(data)
    else:
        conn = socket.create_connection((sys.argv[2], int(sys.argv[3])))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(int(sys.argv[4])):
            started = time.perf_counter()
            conn.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(conn.recv(64))
            times.append(time.perf_counter() - started)
        times.sort()
        print(times[len(times) // 2] * 1e6)
    """
)
PROBE = textwrap.dedent(
    """
    import socket, sys, time
    seen = set()
    while True:
        try:
            with socket.create_connection((sys.argv[1], 80), timeout=1) as conn:
                conn.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                answer = b""
                while chunk := conn.recv(4096):
                    answer += chunk
            name = answer.decode(errors="replace").split("served-by-")[-1].strip()
            if name and name not in seen:
                seen.add(name)
                print(time.time(), name, flush=True)
        except OSError:
            pass
        time.sleep(0.02)
    """
)


def netns_of(lab: WorkloadLab, node: LabNode, container: str) -> list[str]:
    """A command prefix that runs in ``container``'s network namespace."""
    found = json.loads(lab.carte(node, "inspect", container).stdout)
    pid = (found[0] if isinstance(found, list) else found)["state"]["pid"]
    return ["nsenter", f"--net=/proc/{pid}/ns/net"]


def address_of(lab: WorkloadLab, node: LabNode, container: str, network: str) -> str:
    found = json.loads(lab.carte(node, "network", "inspect", network).stdout)
    members = (found[0] if isinstance(found, list) else found)["containers"]
    return str(next(m["ip_address"] for m in members if m["name"] == container))


def iperf(server: list[str], client: list[str], address: str, seconds: int) -> float:
    """Gbit/s received by a one-shot iperf3 server."""
    listening = subprocess.Popen(
        [*server, "iperf3", "-s", "-1", "-p", str(PORT)], stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            done = subprocess.run(
                [*client, "iperf3", "-c", address, "-p", str(PORT), "-t", str(seconds), "-J"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            report = json.loads(done.stdout)
            if "error" not in report:
                return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
            if "refused" not in report["error"] or time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 failed: {report['error']}")
            time.sleep(0.05)
    finally:
        listening.kill()
        listening.wait()


def rtt(server: list[str], client: list[str], address: str, requests: int) -> float:
    """Median round-trip microseconds of 64-byte requests on one connection."""
    serving = subprocess.Popen([*server, sys.executable, "-c", ECHO, "serve", str(ECHO_PORT)])
    try:
        deadline = time.monotonic() + 5
        while True:
            done = subprocess.run(
                [*client, sys.executable, "-c", ECHO, "ask", address, str(ECHO_PORT),
                 str(requests)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return float(done.stdout)
            if time.monotonic() > deadline:
                raise RuntimeError(f"echo client failed: {done.stderr.strip()[-300:]}")
            time.sleep(0.05)
    finally:
        serving.kill()
        serving.wait()


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def bare_vxlan(lab: WorkloadLab) -> tuple[list[str], list[str], str]:
    """Two namespaces behind node1 and node2 joined by a plain bridge + VXLAN (VNI 99, port
    4790, MTU 1450, one flooding FDB entry each way): the commands into each, the address
    of the second."""
    node1, node2 = lab.nodes[0], lab.nodes[1]
    for index, (node, peer) in enumerate([(node1, node2), (node2, node1)], start=1):
        inside = ["ip", "netns", "exec", node.namespace]
        ns = f"{lab.name}-bare{index}"
        sh("ip", "netns", "add", ns)
        sh(*inside, "ip", "link", "add", "brbare", "type", "bridge")
        sh(*inside, "ip", "link", "add", "vxbare", "type", "vxlan", "id", "99", "local",
           node.address, "dstport", "4790", "nolearning")  # fmt: skip
        sh(*inside, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxbare", "dst",
           peer.address)  # fmt: skip
        sh(*inside, "ip", "link", "add", "vebare", "type", "veth", "peer", "name", "eth0",
           "netns", ns)  # fmt: skip
        for link in ("brbare", "vxbare", "vebare"):
            sh(*inside, "ip", "link", "set", link, "mtu", "1450")
        sh(*inside, "ip", "link", "set", "vxbare", "master", "brbare", "up")
        sh(*inside, "ip", "link", "set", "vebare", "master", "brbare", "up")
        sh(*inside, "ip", "link", "set", "brbare", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "mtu", "1450", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"10.250.99.{index}/24", "dev", "eth0")
    return (
        ["ip", "netns", "exec", f"{lab.name}-bare1"],
        ["ip", "netns", "exec", f"{lab.name}-bare2"],
        "10.250.99.2",
    )


def remove_bare(lab: WorkloadLab) -> None:
    for index in (1, 2):
        subprocess.run(["ip", "netns", "del", f"{lab.name}-bare{index}"], capture_output=True)


def vip_after_ready(lab: WorkloadLab, workdir: Path) -> float:
    node1, node2, node3 = lab.nodes
    control = node1
    for node in (node2, node3):
        lab.carte(control, "node", "update", "--label-add", "web=yes", node.name)
    compose = workdir / "compose.yaml"
    compose.write_text(STACK.format(replicas=1))
    lab.carte(control, "apply", "-f", str(compose), "-n", "app")

    def ready() -> dict[str, str]:
        listed = lab.carte(control, "--format", "json", "service", "ps", "app_web", check=False)
        rows = json.loads(listed.stdout) if listed.returncode == 0 else []
        return {row["node"]: row["container_id"] for row in rows if row["ready"]}

    lab.wait("one ready replica", lambda: len(ready()) == 1, 60)
    lab.carte(control, "run", "-d", "--name", "probe", "--network", "app_default",
              "busybox:latest", "sleep", "3600")  # fmt: skip
    answer = lab.carte(control, "run", "--rm", "--network", "app_default", "busybox:latest",
                       "nslookup", "web").stdout  # fmt: skip
    address = [line.split()[-1] for line in answer.splitlines() if "Address" in line][-1]
    probe = subprocess.Popen(
        [*netns_of(lab, control, "probe"), sys.executable, "-c", PROBE, address],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert probe.stdout is not None
    try:
        probe.stdout.readline()  # the first replica answers
        compose.write_text(STACK.format(replicas=2))
        lab.carte(control, "apply", "-f", str(compose), "-n", "app")
        shown = lab.wait("two ready replicas", lambda: len(ready()) == 2 and time.time(), 60)
        served = float(probe.stdout.readline().split()[0])
        return served - float(shown)
    finally:
        probe.kill()
        probe.wait()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed; apt-get install iperf3")
    workdir = Path(tempfile.mkdtemp(prefix="carte-bench-overlay-"))
    busybox = make_rootfs_tar(workdir / "busybox.tar", workdir)
    results: dict[str, Any] = {}
    with WorkloadLab(3, pool="10.74.0.0/16:24", node_ttl=10, leader_ttl=10) as lab:
        try:
            lab.form()
            node1, node2, _ = lab.nodes
            for node in lab.nodes:
                lab.carte(node, "import", str(busybox), "busybox:latest")
            for node in (node1, node2):
                lab.carte(node, "network", "create", "bench")
            for node, name in ((node1, "a"), (node1, "b"), (node2, "c")):
                lab.carte(node, "run", "-d", "--name", name, "--network", "bench",
                          "busybox:latest", "sleep", "3600")  # fmt: skip
            a, b, c = (netns_of(lab, n, x) for n, x in ((node1, "a"), (node1, "b"), (node2, "c")))
            paths = {
                "same_node": (b, a, address_of(lab, node1, "b", "bench")),
                "cross_node": (c, a, address_of(lab, node2, "c", "bench")),
            }
            bare_client, bare_server, bare_address = bare_vxlan(lab)
            paths["bare_vxlan"] = (bare_server, bare_client, bare_address)
            speeds: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):  # interleaved, so drift hits every path alike
                for name, (server, client, address) in paths.items():
                    speeds[name].append(iperf(server, client, address, args.seconds))
            for name, (server, client, address) in paths.items():
                results[f"{name}_gbps"] = round(statistics.median(speeds[name]), 2)
                results[f"{name}_rtt_us"] = round(rtt(server, client, address, args.requests))
            results["cross_vs_bare"] = round(
                results["cross_node_gbps"] / results["bare_vxlan_gbps"], 2
            )
            for node, name in ((node1, "a"), (node1, "b"), (node2, "c")):
                lab.carte(node, "rm", "-f", name)
            results["vip_after_ready_s"] = round(vip_after_ready(lab, workdir), 2)
        finally:
            remove_bare(lab)
            lab.empty_and_stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return emit(results, args.json)


if __name__ == "__main__":
    main()
