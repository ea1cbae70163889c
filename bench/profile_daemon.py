"""Where a busy daemon's time goes: py-spy samples of a private daemon holding COUNT
containers with a health check every 2 s (the density bench's load, Carte alone).

    .venv/bin/pip install py-spy       # a profiling tool, not a dependency of Carte
    .venv/bin/python -m bench.profile_daemon [--count 50] [--seconds 20] [--svg out.svg]

Prints the functions where the daemon's threads were seen most (own time and with callees,
in % of samples), and `ps` / `ps -q` times during the sampling; `--svg` also writes py-spy's
flame graph. Everything it started is removed at the end.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.density import COMMAND, HEALTH, _in_parallel
from bench.peers import ENV, PeerFailed, Peers, run, timed
from bench.results import median


def _summary(raw: Path, top: int) -> list[str]:
    """Own and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")")
                  for frame in stack.split(";")]  # fmt: skip
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples; own time:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("with callees:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--svg", type=Path, help="also write py-spy's flame graph here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        parser.error("py-spy is not installed: .venv/bin/pip install py-spy")
    with Peers(prefix="carte-bench-profile-") as peers:
        carte = peers.carte()
        peers.import_busybox("carte")
        argv = [*carte, "run", "-d", "--network", "none", *HEALTH, "bb", *COMMAND]
        _in_parallel(lambda _: run(argv), args.count)
        time.sleep(5)
        raw = peers.work / "daemon.raw"
        sampler = subprocess.Popen(
            [py_spy, "record", "--pid", str(peers.carte_pid), "--duration", str(args.seconds),
             "--rate", "25", "--format", "raw", "--threads", "--output", str(raw),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
        )  # fmt: skip
        ps = [timed([*carte, "ps"]) for _ in range(5)]
        quiet = [timed([*carte, "ps", "-q"]) for _ in range(5)]
        try:  # sampling a busy process on a loaded machine runs late
            status = sampler.wait(args.seconds * 6 + 60)
        except subprocess.TimeoutExpired:
            sampler.kill()
            sampler.wait()
            status = -1
        if status != 0 or not raw.exists():
            raise PeerFailed("py-spy record failed (is ptrace allowed?)")
        if args.svg:
            subprocess.run(
                [py_spy, "record", "--pid", str(peers.carte_pid), "--duration", "10",
                 "--output", str(args.svg), "--nonblocking"],
                check=False, capture_output=True, env=ENV,
            )  # fmt: skip
        print(f"daemon with {args.count} containers, health check every 2 s, "
              f"{args.seconds} s of samples")  # fmt: skip
        print(f"`ps` median {median(ps) * 1000:.0f} ms, `ps -q` median "
              f"{median(quiet) * 1000:.0f} ms while sampled")  # fmt: skip
        print("\n".join(_summary(raw, 25)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
