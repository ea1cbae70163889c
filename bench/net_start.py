"""Networking cost through the whole engine: container start and container-to-container TCP.

    .venv/bin/python bench/net_start.py [--runs 10] [--seconds 3] [--rounds 3]

One run, side by side:
  start   `carte run --rm bb true` on the default bridge network versus `--network none`,
          interleaved (target: <= 15 ms added, issue 16), and the same pair for podman when it works
          here (podman's bridge goes through netavark). Docker is left out: its bridge mode
          rewrites the host's iptables (FORWARD policy DROP), which would break other work.
  tcp     iperf3 between two Carte containers on one user-defined network (the host's iperf3
          bind-mounted in) versus between two bare namespaces joined by one veth pair
          (target: >= 0.9x).
A private Carte daemon (own root, socket, bridge and nftables table) is used; every
container, network, namespace and directory it made is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers import PeerFailed, Peers, iperf_gbits, timed  # noqa: E402

START_TARGET_MS = 15.0
TCP_TARGET = 0.9
PORT = 5201
# The host's iperf3 and its libraries, also where the busybox rootfs (no merged /usr) looks.
IPERF_MOUNTS = [
    f"-v={source}:{target}:ro"
    for source, target in (
        ("/usr/bin/iperf3", "/usr/bin/iperf3"),
        ("/usr/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"),
        ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"),
        ("/lib64", "/lib64"),
    )
    if os.path.exists(source)
]


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_start(runs: int, carte: list[str], podman: list[str], env: dict[str, str],
                podman_env: dict[str, str], rootfs_tar: Path) -> None:  # fmt: skip
    candidates = {
        "carte --network none": [*carte, "run", "--rm", "--network", "none", "bb", "true"],
        "carte bridge": [*carte, "run", "--rm", "bb", "true"],
    }
    envs = {name: env for name in candidates}
    try:
        timed([*podman, "import", str(rootfs_tar), "bb:latest"], podman_env)
        for name, network in (("podman --network none", "none"), ("podman bridge", "bridge")):
            argv = [*podman, "run", "--rm", "--network", network, "bb:latest", "true"]
            timed(argv, podman_env)
            candidates[name], envs[name] = argv, podman_env
    except PeerFailed as failure:
        print(f"podman: skipped ({str(failure).splitlines()[-1][-160:]})")
    for name, argv in candidates.items():
        timed(argv, envs[name])  # warm up, untimed
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, argv in candidates.items():
            times[name].append(timed(argv, envs[name]))
    print(f"{'run --rm bb true':<24}{'median':>12}{'min':>12}   ({runs} runs)")
    for name, samples in times.items():
        print(f"{name:<24}{_median_ms(samples):>9.1f} ms{min(samples) * 1000:>9.1f} ms")
    added = _median_ms(times["carte bridge"]) - _median_ms(times["carte --network none"])
    verdict = "met" if added <= START_TARGET_MS else "NOT met"
    print(f"carte: bridge adds {added:.1f} ms (target <= {START_TARGET_MS:.0f} ms: {verdict})")
    floor = (min(times["carte bridge"]) - min(times["carte --network none"])) * 1000
    print(f"carte: bridge adds {floor:.1f} ms between the fastest runs (less load noise)")
    if "podman bridge" in times:
        podman_added = _median_ms(times["podman bridge"]) - _median_ms(
            times["podman --network none"]
        )
        print(f"podman: bridge adds {podman_added:.1f} ms")


def _gbits(report_text: str, stderr: str = "") -> float:
    try:
        report = json.loads(report_text)
    except ValueError:
        raise RuntimeError(f"iperf3 did not run: {stderr.strip()[-300:]}") from None
    if "error" in report:
        raise RuntimeError(f"iperf3 failed: {report['error']}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def _carte_tcp(carte: list[str], env: dict[str, str], seconds: int) -> float:
    server = f"srv{secrets.token_hex(3)}"
    timed([*carte, "run", "-d", "--name", server, "--network", "n1bench", *IPERF_MOUNTS,
           "bb", "iperf3", "-s", "-1", "-p", str(PORT)], env)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(
                [*carte, "run", "--rm", "--network", "n1bench", *IPERF_MOUNTS, "bb",
                 "iperf3", "-c", server, "-p", str(PORT), "-t", str(seconds), "-J"],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if (done.stdout and '"error"' not in done.stdout) or time.monotonic() > deadline:
                return _gbits(done.stdout, done.stderr)
            time.sleep(0.05)  # the server is not listening yet
    finally:
        subprocess.run([*carte, "rm", "-f", server], env=env, capture_output=True)


def _veth_tcp(seconds: int) -> float:
    from carte.net.links import LinkControl

    with LinkControl() as links:
        mtu = links.uplink_mtu()  # Carte's bridges take the uplink's MTU: compare like for like
    tag = secrets.token_hex(3)
    left, right = f"n1bl{tag}", f"n1br{tag}"
    try:
        for command in (
            f"ip netns add {left}",
            f"ip netns add {right}",
            f"ip -n {left} link add eth0 mtu {mtu} type veth peer name eth0 mtu {mtu} "
            f"netns {right}",
            f"ip -n {left} addr add 10.214.0.1/30 dev eth0",
            f"ip -n {right} addr add 10.214.0.2/30 dev eth0",
            f"ip -n {left} link set eth0 up",
            f"ip -n {right} link set eth0 up",
        ):
            subprocess.run(command.split(), check=True)
        return iperf_gbits(left, right, "10.214.0.1", seconds, PORT)
    finally:
        subprocess.run(["ip", "netns", "del", left], capture_output=True)
        subprocess.run(["ip", "netns", "del", right], capture_output=True)


def bench_tcp(carte: list[str], env: dict[str, str], seconds: int, rounds: int) -> None:
    if shutil.which("iperf3") is None:
        print("tcp: skipped (apt-get install iperf3)")
        return
    timed([*carte, "network", "create", "n1bench"], env)
    try:
        containers, veth = [], []
        for _ in range(rounds):
            containers.append(_carte_tcp(carte, env, seconds))
            veth.append(_veth_tcp(seconds))
    finally:
        subprocess.run([*carte, "network", "rm", "n1bench"], env=env, capture_output=True)
    ratio = statistics.median(containers) / statistics.median(veth)
    verdict = "met" if ratio >= TCP_TARGET else "NOT met"
    print(f"tcp container-to-container {statistics.median(containers):6.2f} Gbit/s")
    print(f"tcp bare veth namespaces   {statistics.median(veth):6.2f} Gbit/s")
    print(f"ratio {ratio:.2f}x (target >= {TCP_TARGET}x: {verdict})   ({rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ)
    with Peers(prefix="carte-bench-net-") as peers:  # removes all it started, also on failure
        carte = peers.carte()
        podman, podman_env = peers.podman()
        rootfs_tar = peers.busybox_tar()
        peers.import_busybox("carte")
        bench_start(args.runs, carte, podman, env, podman_env, rootfs_tar)
        bench_tcp(carte, env, args.seconds, args.rounds)
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
