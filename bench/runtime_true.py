"""`carte runtime run` of /bin/true against Debian's `runc run`, on the same bundle.

    python bench/runtime_true.py [-n RUNS] [--carte CMD]

Builds one busybox bundle whose config.json is Carte's default spec (namespaces, cgroup,
seccomp, masked paths: the same work for both runtimes), then alternates the two runtimes run
by run so machine load hits both alike, and prints the median, the spread and the ratio
(target: Carte within 3x of runc). `--carte` picks the command (default: this interpreter's
`-m carte`; pass the PyInstaller binary to measure that).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from busybox_rootfs import make_rootfs  # noqa: E402


def make_bundle(directory: Path, carte: list[str]) -> Path:
    make_rootfs(directory / "rootfs")
    spec = subprocess.run([*carte, "runtime", "spec"], check=True, capture_output=True).stdout
    config = json.loads(spec)
    config["process"]["args"] = ["/bin/true"]
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def time_once(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--carte", default=f"{sys.executable} -m carte")
    args = parser.parse_args()
    if shutil.which("runc") is None:
        raise SystemExit("runc is not installed: apt-get install -y runc")
    carte = args.carte.split()
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as work:
        bundle = make_bundle(Path(work), carte)
        state = Path(work) / "state"
        timings: dict[str, list[float]] = {"carte": [], "runc": []}
        for index in range(args.runs + 1):
            carte_run = [*carte, "runtime", "--root", str(state), "run", f"bench-c{index}"]
            runc_run = ["runc", "--root", str(state / "runc"), "run", f"bench-r{index}"]
            carte_time = time_once(carte_run, bundle)
            runc_time = time_once(runc_run, bundle)
            if index:  # the first round warms caches (page cache, seccomp program cache)
                timings["carte"].append(carte_time)
                timings["runc"].append(runc_time)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"runtime run /bin/true, {args.runs} runs each, alternating (seconds)")
    for name, values in timings.items():
        print(
            f"  {name:<6} median {medians[name] * 1000:7.1f} ms"
            f"   min {min(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"
        )
    ratio = medians["carte"] / medians["runc"]
    verdict = "within" if ratio <= 3 else "OUTSIDE"
    print(f"  ratio carte/runc {ratio:.2f}x ({verdict} the 3x target)")


if __name__ == "__main__":
    main()
