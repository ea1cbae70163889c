"""`carte run --rm IMAGE true` against `docker run --rm` and `podman run --rm`, one run.

    .venv/bin/python bench/container_run.py [--runs 10]

Starts a private Carte daemon and a private dockerd (own roots and sockets under a temp dir,
no bridge, no iptables changes) and gives podman its own root and run root (vfs storage); the
same busybox rootfs tar is imported into all three as `bb:latest`. Then, interleaved, RUNS
times each: `run --rm --network none bb:latest true` for the three (the like-for-like row) and
Carte's default network (its own namespace, or a bridge when the network handler runs). Prints
median wall-clock seconds of the client command (what a user waits for) and Carte's ratio to
Docker's (target: <= 0.5x). Everything it started or made is stopped and removed, also on
failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from busybox_rootfs import make_rootfs_tar  # noqa: E402

TARGET_RATIO = 0.5
# Podman's defaults exceed this host's hard ulimits and crun refuses its hybrid cgroups.
PODMAN_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def wait_for(check: list[str], env: dict[str, str], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run(check, env=env, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start within 30 s")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_carte(work: Path) -> subprocess.Popen[bytes]:
    log = (work / "carte.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carte",
            "daemon",
            "--root",
            str(work / "carte-root"),
            "--run-root",
            str(work / "carte-run"),
            "--socket",
            str(work / "carte.sock"),
            "--config",
            "/dev/null",
        ],
        stdout=log,
        stderr=log,
    )


def start_docker(work: Path) -> subprocess.Popen[bytes]:
    log = (work / "docker.log").open("wb")
    return subprocess.Popen(
        [
            "dockerd",
            "--host",
            f"unix://{work}/docker.sock",
            "--data-root",
            str(work / "docker-root"),
            "--exec-root",
            str(work / "docker-exec"),
            "--pidfile",
            str(work / "docker.pid"),
            "--bridge",
            "none",
            "--iptables=false",
            "--ip-masq=false",
        ],
        stdout=log,
        stderr=log,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="carte-bench-run-", dir="/tmp"))
    carte_daemon: subprocess.Popen[bytes] | None = None
    docker_daemon: subprocess.Popen[bytes] | None = None
    env = dict(os.environ)
    carte = [sys.executable, "-m", "carte", "--host", f"unix://{work}/carte.sock"]
    docker_env = {**env, "DOCKER_HOST": f"unix://{work}/docker.sock"}
    podman = [
        "podman",
        "--root",
        str(work / "podman-root"),
        "--runroot",
        str(work / "podman-run"),
        "--storage-driver",
        "vfs",
    ]
    podman_env = {**env, "CONTAINERS_CONF": str(work / "containers.conf")}
    (work / "containers.conf").write_text(PODMAN_CONF)
    try:
        rootfs_tar = make_rootfs_tar(work / "busybox.tar", work)
        carte_daemon = start_carte(work)
        docker_daemon = start_docker(work)
        wait_for([*carte, "version"], env, "carte daemon")
        wait_for(["docker", "version"], docker_env, "dockerd")
        timed([*carte, "import", str(rootfs_tar), "bb:latest"], env)
        timed(["docker", "import", str(rootfs_tar), "bb:latest"], docker_env)
        candidates: dict[str, tuple[list[str], dict[str, str]]] = {
            "carte --network none": (
                [*carte, "run", "--rm", "--network", "none", "bb:latest", "true"],
                env,
            ),
            "carte (default network)": ([*carte, "run", "--rm", "bb:latest", "true"], env),
            "docker --network none": (
                ["docker", "run", "--rm", "--network", "none", "bb:latest", "true"],
                docker_env,
            ),
        }
        try:
            timed([*podman, "import", str(rootfs_tar), "bb:latest"], podman_env)
            podman_run = [*podman, "run", "--rm", "--network", "none", "bb:latest", "true"]
            timed(podman_run, podman_env)
            candidates["podman --network none"] = (podman_run, podman_env)
        except SystemExit as failure:
            print(f"podman: skipped ({str(failure).splitlines()[-1][-200:]})")
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for argv, run_env in candidates.values():
            timed(argv, run_env)  # warm caches once, untimed
        for _ in range(args.runs):
            for name, (argv, run_env) in candidates.items():
                times[name].append(timed(argv, run_env))
        print(
            f"{'run --rm IMAGE true':<28}{'median':>10}{'min':>10}{'max':>10}   ({args.runs} runs)"
        )
        for name, samples in times.items():
            print(
                f"{name:<28}{statistics.median(samples):>8.3f} s{min(samples):>8.3f} s"
                f"{max(samples):>8.3f} s"
            )
        carte_time = statistics.median(times["carte --network none"])
        docker_time = statistics.median(times["docker --network none"])
        ratio = carte_time / docker_time
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        print(f"carte/docker (--network none): {ratio:.2f}x (target <= {TARGET_RATIO}x: {verdict})")
        if "podman --network none" in times:
            podman_time = statistics.median(times["podman --network none"])
            print(f"carte/podman (--network none): {carte_time / podman_time:.2f}x")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        stop(carte_daemon)
        stop(docker_daemon)
        subprocess.run([*podman, "rm", "-af"], capture_output=True, env=podman_env)
        subprocess.run(["umount", "-R", str(work / "docker-root")], capture_output=True)
        subprocess.run(["umount", "-R", str(work / "docker-exec")], capture_output=True)
        subprocess.run(["umount", "-R", str(work / "podman-root")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
