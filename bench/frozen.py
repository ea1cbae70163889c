"""The PyInstaller build: its client start against the installed client's, and its shims' memory.

A private daemon runs from the one-dir binary (`carte.spec`), so the shims and the shim factory
it starts are the binary too. Measured:
  client  `BINARY version` against the installed `carte version` (pip's entry-point script),
          interleaved, against that daemon (target: <= 1.2x);
  shim    the RSS of one `sleep` container's shim, and the factory's (target: <= 8 MB).
The binary is CARTE_BENCH_BINARY, else dist/carte/carte; build it first (minutes):
    .venv/bin/pyinstaller --noconfirm carte.spec
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.container_run import _container_parent, carte_shims
from bench.peers import ENV, REPO, PeerFailed, Peers, pss_mb, rss_mb, run, timed
from bench.results import Result, interleave

NAME = "frozen"
DEFAULT_RUNS = 20


def binary_path() -> Path:
    return Path(os.environ.get("CARTE_BENCH_BINARY", REPO / "dist" / "carte" / "carte"))


def measure(peers: Peers, runs: int) -> list[Result]:
    binary = binary_path()
    if not binary.exists():
        raise PeerFailed(
            f"no PyInstaller build at {binary}; build it with "
            "`.venv/bin/pyinstaller --noconfirm carte.spec` or set CARTE_BENCH_BINARY"
        )
    frozen = peers.carte(program=[str(binary)])
    installed = peers.installed_carte()  # the daemon is the binary's, started above
    samples = interleave(
        {
            "binary": lambda: timed([*frozen, "version"], ENV),
            "installed": lambda: timed([*installed, "version"], ENV),
        },
        runs,
        warm=2,
    )
    peers.import_busybox("carte")
    run([*frozen, "run", "-d", "--network", "none", "--name", "bench-sleep", "bb", "sleep", "600"])
    time.sleep(1.0)
    shim = _container_parent(frozen, "bench-sleep")
    factories = [rss_mb(pid) for pid in carte_shims(peers, "factory")]
    shim_rss, shim_pss = (rss_mb(shim), pss_mb(shim)) if shim else (float("nan"),) * 2
    run([*frozen, "rm", "-f", "bench-sleep"])
    factory = f"shim factory {factories[0]:.1f} MB" if factories else "no shim factory found"
    return [
        Result.of_medians(NAME, "PyInstaller binary `version` vs the installed client", samples,
                          "binary", "installed", "installed client", limit=1.2, runs=runs),
        Result(NAME, "PyInstaller binary: shim RSS, one `sleep` container", shim_rss, "MB",
               limit=8.0, note=f"PSS {shim_pss:.1f} MB; {factory}"),
    ]  # fmt: skip
