"""`carte build` against Docker's legacy builder (`DOCKER_BUILDKIT=0 docker build`).

Two contexts, both built FROM the same busybox image imported into each engine:
  cache-hit  a 10-step Dockerfile (COPY, RUN, ENV, WORKDIR, LABEL...) built once, then rebuilt
             unchanged RUNS times, interleaved with Docker's rebuild (target: <= 0.5x);
  cold       5 COPY steps of 1000 small files each, built with --no-cache, interleaved
             (target: <= 1.0x).
Wall-clock seconds of the client command, as a user sees them.
"""

from __future__ import annotations

from pathlib import Path

from bench.peers import PeerFailed, Peers, timed
from bench.results import Result, interleave

NAME = "build"
DEFAULT_RUNS = 5

TEN_STEPS = """\
FROM bb:latest
WORKDIR /app
COPY src/ ./src/
RUN for i in $(seq 1 200); do echo "line $i" >> generated.txt; done
RUN cat src/*.txt > all.txt
ENV MODE=prod
COPY config.ini /etc/app/
RUN mkdir -p /out && cp all.txt /out/
LABEL bench=carte
CMD ["cat", "/app/all.txt"]
"""


def _ten_step_context(directory: Path) -> Path:
    (directory / "src").mkdir(parents=True)
    for number in range(50):
        (directory / "src" / f"part{number:03}.txt").write_text(f"part {number}\n" * 20)
    (directory / "config.ini").write_text("[app]\nmode = prod\n")
    (directory / "Dockerfile").write_text(TEN_STEPS)
    return directory


def _copies_context(directory: Path) -> Path:
    lines = ["FROM bb:latest"]
    for step in range(5):
        tree = directory / f"tree{step}"
        tree.mkdir(parents=True)
        for number in range(1000):
            (tree / f"f{number:04}.txt").write_text(f"step {step} file {number}\n")
        lines.append(f"COPY tree{step}/ /data/tree{step}/")
    (directory / "Dockerfile").write_text("\n".join(lines) + "\n")
    return directory


def measure(peers: Peers, runs: int) -> list[Result]:
    carte = peers.carte()
    peers.import_busybox("carte")
    try:
        docker = {**peers.docker(), "DOCKER_BUILDKIT": "0"}
        peers.import_busybox("docker")
    except PeerFailed as failure:
        raise PeerFailed(f"docker build cannot be compared: {failure}") from None
    ten = _ten_step_context(peers.work / "ten-steps")
    copies = _copies_context(peers.work / "copies")

    def carte_build(context: Path, *flags: str) -> float:
        return timed([*carte, "build", *flags, "-q", "-t", f"bench-{context.name}", str(context)])

    def docker_build(context: Path, *flags: str) -> float:
        argv = ["docker", "build", *flags, "-q", "-t", f"bench-{context.name}", str(context)]
        return timed(argv, docker)

    carte_build(ten)  # fill both caches
    docker_build(ten)
    hits = interleave(
        {"carte": lambda: carte_build(ten), "docker": lambda: docker_build(ten)}, runs, warm=0
    )
    colds = interleave(
        {
            "carte": lambda: carte_build(copies, "--no-cache"),
            "docker": lambda: docker_build(copies, "--no-cache"),
        },
        max(1, runs // 2),
        warm=0,
    )
    return [
        Result.of_medians(
            NAME, "cache-hit rebuild of a 10-step Dockerfile vs docker build (legacy)",
            hits, "carte", "docker", "docker legacy builder", limit=0.5, runs=runs,
        ),
        Result.of_medians(
            NAME, "cold build, 5 COPY steps of 1000 small files vs docker build (legacy)",
            colds, "carte", "docker", "docker legacy builder", limit=1.0, runs=max(1, runs // 2),
        ),
    ]  # fmt: skip
