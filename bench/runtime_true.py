"""`carte runtime run` of /bin/true against Debian's `runc run`, on the same bundle.

One busybox bundle whose config.json is Carte's default spec (namespaces, cgroup, seccomp,
masked paths: the same work for both runtimes), run by each runtime in turn.
`make_bundle` is shared with container_run, which compares the whole engine with runc.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

from bench.peers import CARTE, PeerFailed, Peers, run, timed
from bench.results import Result, interleave

NAME = "runtime_true"
DEFAULT_RUNS = 20
_ids = itertools.count()


def make_bundle(peers: Peers, name: str = "bundle") -> Path:
    """A bundle running /bin/true, made once per Peers."""
    bundle = peers.work / name
    if not (bundle / "config.json").exists():
        peers.busybox_rootfs(bundle / "rootfs")
        config = json.loads(run([*CARTE, "runtime", "spec"]))
        config["process"]["args"] = ["/bin/true"]
        config["process"]["terminal"] = False
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def runc_runner(peers: Peers, bundle: Path) -> tuple[str, list[str]]:
    """(state root, argv prefix) for `runc run` of `bundle`."""
    if shutil.which("runc") is None:
        raise PeerFailed("runc is not installed (apt-get install runc)")
    return str(peers.work / "runc-state"), ["runc", "--root", str(peers.work / "runc-state")]


def time_runc(peers: Peers, bundle: Path) -> float:
    _, runc = runc_runner(peers, bundle)
    return timed([*runc, "run", f"bench-r{next(_ids)}"], cwd=bundle)


def measure(peers: Peers, runs: int) -> list[Result]:
    bundle = make_bundle(peers)
    state = str(peers.work / "carte-runtime-state")

    def carte_run() -> float:
        return timed(
            [*CARTE, "runtime", "--root", state, "run", f"bench-c{next(_ids)}"], cwd=bundle
        )

    samples = interleave(
        {"carte runtime run": carte_run, "runc run": lambda: time_runc(peers, bundle)}, runs
    )
    return [
        Result.of_medians(
            NAME,
            "`carte runtime run` vs `runc run`, same bundle, /bin/true",
            samples,
            "carte runtime run",
            "runc run",
            "runc",
            limit=1.5,
            runs=runs,
        )
    ]
