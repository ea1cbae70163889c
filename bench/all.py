"""Every benchmark: `python -m bench`, then the standalone network scripts.

`python -m bench` runs the comparisons (table and JSON); net_setup, net_throughput and
net_start stay scripts of their own.

    .venv/bin/python bench/all.py [--quick] [--only NAME ...] [--json results.json]

`--quick` runs 3 rounds per comparison; `--only` names benchmarks of `python -m bench` or
network scripts. Exit status: 1 if anything failed, else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.__main__ import DEFAULT, ON_REQUEST  # noqa: E402
from bench.__main__ import main as run_benches  # noqa: E402

NETWORK_SCRIPTS = {
    "net_setup": ("--runs", "15"),
    "net_throughput": ("--seconds", "2", "--rounds", "2"),
    "net_start": ("--runs", "4", "--rounds", "2"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per comparison")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=[])
    parser.add_argument("--json", help="write the comparisons' results here")
    args = parser.parse_args()
    known = (*DEFAULT, *ON_REQUEST, *NETWORK_SCRIPTS)
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; names: {' '.join(known)}")
    benches = [name for name in args.only if name not in NETWORK_SCRIPTS]
    scripts = [name for name in args.only if name in NETWORK_SCRIPTS] or (
        [] if args.only else list(NETWORK_SCRIPTS)
    )
    failed = False
    if benches or not args.only:
        options = ["--runs", "3"] if args.quick else []
        options += ["--json", args.json] if args.json else []
        failed = run_benches([*benches, *options]) != 0
    for name in scripts:
        print(f"== {name}", flush=True)
        command = [sys.executable, str(BENCH_DIR / f"{name}.py")]
        command += list(NETWORK_SCRIPTS[name]) if args.quick else []
        failed |= subprocess.run(command, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
