"""Run every benchmark in bench/ one after another and print one table of their verdicts.

    .venv/bin/python bench/all.py [--quick] [--only NAME ...]

Each script runs in its own process with this interpreter (as root, like the scripts need);
its whole output is printed as it finishes, then one table lists, per script, the lines that
state a result against its target or baseline (those saying "target", "ratio" or "x veth"),
how long it took, and whether it failed. `--quick` passes fewer runs to each script
(noisier numbers, about a third of the time). A script that fails is reported with its exit
code and its last line of output; the others still run. Exit status: 1 if any script failed, else 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VERDICT_WORDS = ("target", "ratio", "x veth")  # lines that state a result


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    quick_args: tuple[str, ...]


BENCHES = (
    Bench("client start / idle RSS", "client_start.py", ("--runs", "10")),
    Bench("runtime run true vs runc", "runtime_true.py", ("-n", "8")),
    Bench("run --rm true vs docker/podman", "container_run.py", ("--runs", "4")),
    Bench("build vs docker build", "build.py", ("--runs", "2")),
    Bench("push/pull vs skopeo", "registry.py", ("--runs", "1")),
    Bench("netns plug-in cost", "net_setup.py", ("--runs", "15")),
    Bench("bridge TCP throughput", "net_throughput.py", ("--seconds", "2", "--rounds", "2")),
    Bench("network start + container TCP", "net_start.py", ("--runs", "4", "--rounds", "2")),
)


@dataclass(frozen=True)
class Outcome:
    bench: Bench
    seconds: float
    exit_code: int
    output: str

    def verdicts(self) -> list[str]:
        lines = [line.strip() for line in self.output.splitlines()]
        picked = [line for line in lines if any(word in line for word in VERDICT_WORDS)]
        if self.exit_code != 0:
            last = next((line for line in reversed(lines) if line), "no output")
            picked.append(f"FAILED (exit {self.exit_code}): {last[:150]}")
        return picked or ["(no verdict line; see its output above)"]


def run_bench(bench: Bench, quick: bool) -> Outcome:
    """Run one script to completion; its output is captured, never raised on failure."""
    command = [sys.executable, str(BENCH_DIR / bench.script)]
    if quick:
        command += bench.quick_args
    started = time.monotonic()
    result = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    return Outcome(bench, time.monotonic() - started, result.returncode, result.stdout)


def print_table(outcomes: list[Outcome]) -> None:
    width = max(len(outcome.bench.name) for outcome in outcomes)
    print(f"\n{'benchmark':<{width}}  {'time':>6}  result")
    for outcome in outcomes:
        head = f"{outcome.bench.name:<{width}}  {outcome.seconds:5.0f}s"
        for index, verdict in enumerate(outcome.verdicts()):
            print(f"{head if index == 0 else '':<{width + 8}}  {verdict}")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\n{os.cpu_count()} CPUs, load average now {load} (other work slows wall times)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per script")
    parser.add_argument(
        "--only", nargs="+", metavar="SCRIPT", help="script names to run (e.g. build registry)"
    )
    args = parser.parse_args()
    chosen = [
        bench
        for bench in BENCHES
        if not args.only or bench.script.removesuffix(".py") in args.only
        if (BENCH_DIR / bench.script).exists()
    ]
    if not chosen:
        print(
            f"bench/all.py: no benchmark matches {args.only}; names: "
            + ", ".join(b.script.removesuffix(".py") for b in BENCHES),
            file=sys.stderr,
        )
        return 2
    outcomes = []
    for bench in chosen:
        print(f"== {bench.script} ({bench.name})", flush=True)
        outcome = run_bench(bench, args.quick)
        print(outcome.output, end="" if outcome.output.endswith("\n") else "\n", flush=True)
        outcomes.append(outcome)
    print_table(outcomes)
    return 1 if any(outcome.exit_code != 0 for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
