"""Run inside the VM by bench/overlay_encrypted.py: a two-node lab, networks ``clear`` and
``sec`` (encrypted) on both nodes, a `sleep` container per node on each, then iperf3 and a
64-byte echo between node 1's and node 2's container on each network. Prints one line
``CARTE_BENCH_ENC {json}``.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "daemon" / "cluster"), str(REPO)]

# sets CARTE_TEST_SLOWDOWN for the emulated guest; the lab's quick forming and /tmp as tmpfs
from encrypted_overlay_guest import command, form_quickly, fresh_tmp  # noqa: E402

ROUNDS = 3
SECONDS = 3
REQUESTS = 500


def main() -> None:
    fresh_tmp()
    from support.busybox import make_rootfs_tar
    from support.cluster import WorkloadLab

    from bench.overlay import iperf, netns_of, rtt

    results: dict[str, Any] = {"kernel": platform.release(), "emulated": "QEMU TCG, no KVM"}
    work = Path("/tmp/enc-bench")
    work.mkdir()
    image = make_rootfs_tar(work / "busybox.tar", work)
    lab = WorkloadLab(2, pool="10.75.0.0/16:24", node_ttl=20, leader_ttl=20,
                      extra='overlay: {vnis: "6100-6109"}\n')  # fmt: skip
    try:
        with lab:
            try:
                form_quickly(lab, image)
                node1, node2 = lab.nodes
                paths = {}
                for network, options in (("clear", {}), ("sec", {"encrypted": "true"})):
                    for node in lab.nodes:
                        command(node, "CreateNetwork", name=network, options=options)
                    ends = []
                    for node in (node1, node2):
                        name = f"{network}-{node.name}"
                        lab.carte(node, "run", "-d", "--name", name, "--network", network,
                                  "busybox:latest", "sleep", "3600")  # fmt: skip
                        ends.append(netns_of(lab, node, name))
                    members = command(node2, "InspectNetwork", name=network)["containers"]
                    address = next(m["ip_address"] for m in members if m["name"].endswith("2"))
                    paths[network] = (ends[1], ends[0], str(address))
                speeds: dict[str, list[float]] = {name: [] for name in paths}
                for _ in range(ROUNDS):
                    for name, (server, client, address) in paths.items():
                        speeds[name].append(iperf(server, client, address, SECONDS))
                for name, (server, client, address) in paths.items():
                    results[f"{name}_mbps"] = round(statistics.median(speeds[name]) * 1000, 1)
                    results[f"{name}_rtt_us"] = round(rtt(server, client, address, REQUESTS))
                results["encrypted_vs_clear"] = round(
                    results["sec_mbps"] / results["clear_mbps"], 2
                )
                results["encrypted_rtt_vs_clear"] = round(
                    results["sec_rtt_us"] / results["clear_rtt_us"], 2
                )
            finally:
                lab.empty_and_stop()
    except Exception:
        results["error"] = traceback.format_exc()[-3000:]
    print("CARTE_BENCH_ENC " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
