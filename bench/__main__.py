"""Run Carte's benchmarks against their peers and write the results as JSON.

    .venv/bin/python -m bench [NAMES...] [--runs N] [--json results.json]
    .venv/bin/python -m bench.table results.json     # the README's table from that JSON

As root. Each benchmark starts the private peers it needs (a Carte daemon, dockerd, podman
with its own storage, runc, a docker-registry) under one temporary directory and removes them
afterwards, also on failure. Comparisons run A/B interleaved, `--runs` rounds (each
benchmark's own default otherwise), and report medians; the table printed at the end gives
Carte's median, the other's, their ratio and the issue's target, with the machine's load
average before and after, since other work on the machine inflates wall times (ratios less).

Without NAMES the default set runs (minutes); `density`, `stack_scale`, `import_speed`
(which needs the game example's cached Debian base tar) and `frozen` (which needs a PyInstaller
build) take longer or need more, and run only when named.
A benchmark that fails is reported with its one-line reason and the others still run; the
exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from subprocess import TimeoutExpired
from types import ModuleType
from typing import Any

from bench.peers import PeerFailed, Peers
from bench.results import Result, format_value, load_average

DEFAULT = ("client_start", "runtime_true", "container_run", "registry", "build")
ON_REQUEST = ("density", "stack_scale", "import_speed", "frozen", "docker_api")


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def run_one(name: str, runs: int | None) -> tuple[list[Result], str]:
    """The rows of one benchmark, or ([], why it failed)."""
    module = _module(name)
    try:
        with Peers(prefix=f"carte-bench-{name}-") as peers:
            return module.measure(peers, runs or module.DEFAULT_RUNS), ""
    except (PeerFailed, OSError, ValueError, KeyError, IndexError, TimeoutExpired) as failure:
        return [], f"{type(failure).__name__}: {failure}"


def print_table(rows: list[Result]) -> None:
    width = max((len(row.measure) for row in rows), default=10)
    print(f"\n{'measure':<{width}}  {'carte':>10}  {'other':>10}  {'ratio':>6}  target")
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        verdict = {True: "met", False: "NOT met", None: ""}[row.met]
        print(
            f"{row.measure:<{width}}  {format_value(row.carte, row.unit):>10}  "
            f"{format_value(row.other, row.unit):>10}  {ratio:>6}  {row.target} {verdict}"
        )
        if row.note:
            print(f"{'':<{width}}    ({row.note})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: {' '.join(DEFAULT)}; also {' '.join(ON_REQUEST)})",
    )
    parser.add_argument("--runs", type=int, help="rounds per comparison (default: per bench)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in DEFAULT + ON_REQUEST]
    if unknown:
        parser.error(
            f"no benchmark named {', '.join(unknown)}; names: {' '.join(DEFAULT + ON_REQUEST)}"
        )
    if os.geteuid() != 0:
        parser.error("run as root: the benchmarks start daemons and containers")
    names = args.names or list(DEFAULT)
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    rows: list[Result] = []
    failures: dict[str, str] = {}
    for name in names:
        print(f"== {name}", flush=True)
        began = time.monotonic()
        found, failure = run_one(name, args.runs)
        rows += found
        if failure:
            failures[name] = failure
            print(f"   FAILED: {failure}", flush=True)
        print(f"   {len(found)} rows in {time.monotonic() - began:.0f} s", flush=True)
    load_after = load_average()
    print_table(rows)
    for name, failure in failures.items():
        print(f"{name}: FAILED ({failure})")
    print(
        f"\n{os.cpu_count()} CPUs; load average before {' '.join(map(str, load_before))}, "
        f"after {' '.join(map(str, load_after))} (other work inflates wall times)"
    )
    if args.json:
        report: dict[str, Any] = {
            "date": started_at,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kernel": platform.release(),
            },
            "load_before": load_before,
            "load_after": load_after,
            "benches": names,
            "failures": failures,
            "results": [row.as_json() for row in rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
