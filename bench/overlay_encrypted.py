"""An encrypted overlay network against a plain one, between two nodes, in a kernel that has
WireGuard (this machine's has not: the run boots Debian's stock kernel with virtme-ng, as the
encrypted-overlay test does, and runs bench/overlay_encrypted_guest.py there).

    .venv/bin/python bench/overlay_encrypted.py [--json out.json]

Measured in the guest, between a container on node 1 and one on node 2 of a two-node lab
(network namespaces on one LAN bridge, a daemon each, a real etcd): TCP throughput (iperf3,
median of the rounds, the two networks interleaved) and the median round trip of a 64-byte
request, on network ``clear`` and on network ``sec`` (``-o encrypted=true``: VXLAN inside
WireGuard). ``encrypted_vs_clear`` is the throughput ratio.

The guest runs under QEMU without KVM (TCG): every instruction is emulated, the encryption's
too, so the absolute numbers say nothing about real hardware and the ratio is an upper bound
of the cost (ChaCha20 emulated against a plain copy).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from support.vm import run_in_vm  # noqa: E402

from bench.results import emit  # noqa: E402

GUEST = Path(__file__).with_name("overlay_encrypted_guest.py")
VERDICT = "CARTE_BENCH_ENC "


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed; apt-get install iperf3")
    results = run_in_vm(GUEST, VERDICT, timeout=1800, memory="2G")
    if "error" in results:
        raise SystemExit(f"the guest failed:\n{results['error']}")
    return emit(results, args.json)


if __name__ == "__main__":
    main()
