"""`carte import` of a Debian root filesystem tar against `docker import`, and a cold build on it.

The tar is the game example's debootstrap base (about 200 MB, 10 400 entries), cached under
/var/cache/carte-tests by config/examples/game/make-base.sh (`--tar-only` makes it). Rows:
  import      `carte import TAR` vs `docker import TAR`, interleaved; each engine's image is
              removed (and its layer freed) after each run, so every import does all the work
              (target: <= 1.0x);
  cold build  FROM that base: a COPY of 1000 small files and a RUN copying /usr/share (about
              3000 files) into a new directory, built with --no-cache, interleaved with Docker's
              legacy builder (target: <= 1.0x).
Wall-clock seconds of the client command, as a user sees them.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from bench.peers import PeerFailed, Peers, run, timed
from bench.results import Result, interleave

NAME = "import_speed"
DEFAULT_RUNS = 3
CACHE = os.environ.get("CACHE_DIR", "/var/cache/carte-tests")

COLD = """\
FROM game-base:bench
COPY tree/ /srv/tree/
RUN cp -a /usr/share /opt/share-copy && rm -rf /opt/share-copy/locale
"""


def base_tar() -> Path:
    """The newest cached debootstrap tar; PeerFailed saying how to make it when there is none."""
    found = sorted(glob.glob(f"{CACHE}/debian-bookworm-game-*.tar"), key=os.path.getmtime)
    if not found:
        raise PeerFailed(
            f"no {CACHE}/debian-bookworm-game-*.tar; make it with "
            "config/examples/game/make-base.sh --tar-only"
        )
    return Path(found[-1])


def _cold_context(directory: Path) -> Path:
    tree = directory / "tree"
    tree.mkdir(parents=True)
    for number in range(1000):
        (tree / f"f{number:04}.txt").write_text(f"file {number}\n")
    (directory / "Dockerfile").write_text(COLD)
    return directory


def measure(peers: Peers, runs: int) -> list[Result]:
    tar = str(base_tar())
    carte = peers.carte()
    try:
        docker = {**peers.docker(), "DOCKER_BUILDKIT": "0"}
    except PeerFailed as failure:
        raise PeerFailed(f"docker import cannot be compared: {failure}") from None

    def carte_import() -> float:
        seconds = timed([*carte, "import", tar, "imp:bench"])
        run([*carte, "image", "rm", "imp:bench"])
        return seconds

    def docker_import() -> float:
        seconds = timed(["docker", "import", tar, "imp:bench"], docker)
        run(["docker", "image", "rm", "imp:bench"], docker)
        return seconds

    imports = interleave({"carte": carte_import, "docker": docker_import}, runs, warm=0)

    run([*carte, "import", tar, "game-base:bench"])
    run(["docker", "import", tar, "game-base:bench"], docker)
    context = _cold_context(peers.work / "cold")

    def carte_build() -> float:
        return timed([*carte, "build", "--no-cache", "-q", "-t", "cold:bench", str(context)])

    def docker_build() -> float:
        argv = ["docker", "build", "--no-cache", "-q", "-t", "cold:bench", str(context)]
        return timed(argv, docker)

    builds = interleave({"carte": carte_build, "docker": docker_build}, runs, warm=0)
    size = os.path.getsize(tar) / 1e6
    return [
        Result.of_medians(
            NAME, f"import of a {size:.0f} MB debootstrap root tar vs docker import",
            imports, "carte", "docker", "docker import", limit=1.0, runs=runs,
        ),
        Result.of_medians(
            NAME, "cold build on it (COPY 1000 files, RUN cp -a /usr/share) vs docker build",
            builds, "carte", "docker", "docker legacy builder", limit=1.0, runs=runs,
        ),
    ]  # fmt: skip
