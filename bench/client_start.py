"""Client start-up and daemon idle memory, measured in one run.

    .venv/bin/python bench/client_start.py [--runs 30] [--binary dist/carte/carte]

Starts a private daemon (temporary root, run root and socket), then times, interleaved,
`carte version` against it and `python -c pass` from the same interpreter; prints the median
wall times and their ratio (target: <= 3x), and the daemon's idle RSS (target: <= 60 MB).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT_RATIO_TARGET = 3.0
IDLE_RSS_TARGET_MB = 60.0


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench: the daemon exited with {process.returncode}")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.02)
        finally:
            probe.close()
    raise SystemExit(f"bench: no daemon socket at {path} after {timeout}s")


# Cached bytecode is what users get (pip compiles it at install); a developer shell that sets
# PYTHONDONTWRITEBYTECODE would make every run recompile Carte's sources instead.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_once(argv: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of `argv`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per command (median taken)")
    parser.add_argument("--binary", help="also time this PyInstaller-built carte binary")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="carte-bench-"))
    sock = work / "carte.sock"
    config = work / "carte.yaml"
    config.write_text("")
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carte",
            "daemon",
            "--root",
            str(work / "root"),
            "--run-root",
            str(work / "run"),
            "--socket",
            str(sock),
            "--config",
            str(config),
        ],
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        wait_for_socket(sock, daemon)
        host = ["--host", f"unix://{sock}"]
        script = Path(sys.executable).with_name("carte")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -m carte version": [sys.executable, "-m", "carte", *host, "version"],
        }
        if script.exists():
            commands["carte version (venv script)"] = [str(script), *host, "version"]
        if args.binary:
            commands["carte version (binary)"] = [args.binary, *host, "version"]
        for argv in commands.values():  # warm the page cache and .pyc files
            run_once(argv)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                wall, used = run_once(argv)
                samples[name].append(wall)
                cpu[name].append(used)
        time.sleep(1.0)  # let the daemon go idle after serving the runs
        idle_rss = rss_mb(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    baseline = statistics.median(samples["python -c pass"])
    cpu_baseline = statistics.median(cpu["python -c pass"])
    load = os.getloadavg()[0]
    print(f"Python {sys.version.split()[0]}, {args.runs} runs each, medians")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f} (wall times grow with load)")
    print(f"{'command':<32} {'wall':>9} {'vs python':>10} {'cpu':>9} {'vs python':>10}")
    for name, values in samples.items():
        median, used = statistics.median(values), statistics.median(cpu[name])
        print(
            f"{name:<32} {median * 1000:>7.1f}ms {median / baseline:>9.2f}x"
            f" {used * 1000:>7.1f}ms {used / cpu_baseline:>9.2f}x"
        )
    ratio = statistics.median(samples["python -m carte version"]) / baseline
    verdict = "ok" if ratio <= CLIENT_RATIO_TARGET else "OVER TARGET"
    print(f"client start ratio: {ratio:.2f}x (target <= {CLIENT_RATIO_TARGET:g}x) {verdict}")
    verdict = "ok" if idle_rss <= IDLE_RSS_TARGET_MB else "OVER TARGET"
    print(f"daemon idle RSS: {idle_rss:.1f} MB (target <= {IDLE_RSS_TARGET_MB:g} MB) {verdict}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
