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
import importlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_rootfs(directory: Path) -> Path:
    """tests/busybox_rootfs.py's rootfs (a script there, not a package)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    builder = importlib.import_module("busybox_rootfs")
    rootfs: Path = builder.make_rootfs(directory)
    return rootfs


def make_bundle(directory: Path, carte: list[str]) -> Path:
    make_rootfs(directory / "rootfs")
    spec = subprocess.run([*carte, "runtime", "spec"], check=True, capture_output=True).stdout
    config = json.loads(spec)
    config["process"]["args"] = ["/bin/true"]
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def time_once(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user+sys of the runtime and every process it reaped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


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
        cpu: dict[str, list[float]] = {"carte": [], "runc": []}
        for index in range(args.runs + 1):
            carte_run = [*carte, "runtime", "--root", str(state), "run", f"bench-c{index}"]
            runc_run = ["runc", "--root", str(state / "runc"), "run", f"bench-r{index}"]
            carte_time, carte_cpu = time_once(carte_run, bundle)
            runc_time, runc_cpu = time_once(runc_run, bundle)
            if index:  # the first round warms caches (page cache, seccomp program cache)
                timings["carte"].append(carte_time)
                timings["runc"].append(runc_time)
                cpu["carte"].append(carte_cpu)
                cpu["runc"].append(runc_cpu)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"runtime run /bin/true, {args.runs} runs each, alternating (seconds)")
    for name, values in timings.items():
        print(
            f"  {name:<6} median {medians[name] * 1000:7.1f} ms"
            f"   min {min(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"
            f"   cpu median {statistics.median(cpu[name]) * 1000:6.1f} ms"
        )
    ratio = medians["carte"] / medians["runc"]
    cpu_ratio = statistics.median(cpu["carte"]) / statistics.median(cpu["runc"])
    verdict = "within" if ratio <= 3 else "OUTSIDE"
    print(f"  ratio carte/runc {ratio:.2f}x wall ({verdict} the 3x target), {cpu_ratio:.2f}x cpu")


if __name__ == "__main__":
    main()
