"""`carte build` against `docker build` (Debian's docker.io) on one multi-stage context.

    .venv/bin/python bench/build.py [--runs 5]

Starts a private Carte daemon and a private dockerd (own roots and sockets under a temp dir,
no bridge, no iptables changes), imports the same busybox rootfs into both as `bb:latest`,
then times on the same context:
  cold      a multi-stage build with --no-cache (the unneeded stage is skipped by both);
  cache-hit the same build again, unchanged (median of RUNS); target: <= 1x Docker's;
  edited    the build after changing one small file (only the last COPY reruns).
Docker is timed with its classic builder and, when its daemon supports it, BuildKit
(DOCKER_BUILDKIT=1). Times are wall-clock seconds of the client command, as a user sees them.
Everything it started or made is stopped and removed, also on failure.
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

DOCKERFILE = """\
FROM bb:latest AS builder
WORKDIR /src
COPY src/ ./
RUN for i in $(seq 1 500); do echo "line $i" >> generated.txt; done && cat *.txt > all.txt
RUN mkdir -p /out && cp all.txt big.bin /out/

FROM bb:latest AS unused
RUN echo this stage is not needed by the target

FROM bb:latest
COPY --from=builder /out /app
COPY config.ini /etc/app/
ENV MODE=prod
EXPOSE 8080
CMD ["cat", "/app/all.txt"]
"""


def make_context(directory: Path) -> Path:
    (directory / "src").mkdir(parents=True)
    for number in range(200):
        (directory / "src" / f"part{number:03}.txt").write_text(f"part {number}\n" * 20)
    (directory / "src" / "big.bin").write_bytes(os.urandom(8 << 20))
    (directory / "config.ini").write_text("[app]\nmode = prod\n")
    (directory / "Dockerfile").write_text(DOCKERFILE)
    (directory / ".dockerignore").write_text("*.tmp\n")
    return directory


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{result.stdout}\n{result.stderr}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="carte-bench-build-", dir="/tmp"))
    carte_daemon: subprocess.Popen[bytes] | None = None
    docker_daemon: subprocess.Popen[bytes] | None = None
    try:
        rootfs_tar = make_rootfs_tar(work / "busybox.tar", work)
        context = make_context(work / "context")
        carte = [sys.executable, "-m", "carte", "--host", f"unix://{work}/carte.sock"]
        env = dict(os.environ)
        log = (work / "carte.log").open("wb")
        carte_daemon = subprocess.Popen(
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
        docker_env = {**env, "DOCKER_HOST": f"unix://{work}/docker.sock"}
        dlog = (work / "docker.log").open("wb")
        docker_daemon = subprocess.Popen(
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
            stdout=dlog,
            stderr=dlog,
        )
        wait_for([*carte, "info"], env, "carte daemon")
        wait_for(["docker", "version"], docker_env, "dockerd")
        timed([*carte, "import", str(rootfs_tar), "bb:latest"], env)
        timed(["docker", "import", str(rootfs_tar), "bb:latest"], docker_env)

        carte_build = [*carte, "build", "-t", "bench:1", str(context)]
        classic_env = {**docker_env, "DOCKER_BUILDKIT": "0"}
        buildkit_env = {**docker_env, "DOCKER_BUILDKIT": "1"}
        docker_build = ["docker", "build", "-q", "-t", "bench:1", str(context)]
        rows: list[tuple[str, float, float]] = []
        edited: list[float] = []
        for name, argv, run_env in (
            ("carte build", carte_build, env),
            ("docker build (classic)", docker_build, classic_env),
            ("docker build (BuildKit)", docker_build, buildkit_env),
        ):
            try:
                cold = timed([*argv[:-1], "--no-cache", argv[-1]], run_env)
                timed(argv, run_env)  # warm the cache after the cold run
                hits = [timed(argv, run_env) for _ in range(args.runs)]
                edits = []
                for run in range(args.runs):
                    (context / "config.ini").write_text(f"[app]\nmode = prod\nrun = {run}\n")
                    edits.append(timed(argv, run_env))
            except SystemExit as failure:
                reason = " / ".join(line for line in str(failure).splitlines() if line.strip())
                print(f"{name}: skipped ({reason[-300:]})")
                continue
            rows.append((name, cold, statistics.median(hits)))
            edited.append(statistics.median(edits))
        print(f"{'':<26}{'cold multi-stage':>18}{'cache-hit rebuild':>20}{'one file edited':>18}")
        for (name, cold, hit), edit in zip(rows, edited, strict=True):
            print(f"{name:<26}{cold:>16.2f} s{hit:>18.2f} s{edit:>16.2f} s")
        carte_hit = next((hit for name, _, hit in rows if name == "carte build"), None)
        docker_hits = [hit for name, _, hit in rows if name != "carte build"]
        if docker_hits and carte_hit is not None:
            best = min(docker_hits)
            verdict = "met" if carte_hit <= best else "NOT met"
            print(
                f"cache-hit rebuild: carte {carte_hit:.2f} s vs docker's best {best:.2f} s "
                f"= {carte_hit / best:.2f}x (target <= 1x: {verdict})"
            )
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        stop(carte_daemon)
        stop(docker_daemon)
        subprocess.run(["umount", "-R", str(work / "docker-root")], capture_output=True)
        subprocess.run(["umount", "-R", str(work / "docker-exec")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
