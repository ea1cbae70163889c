"""`carte run --rm bb true` against runc, Docker and Podman; the bridge's cost; shim memory.

Interleaved, each round: Carte with `--network none` and on its default bridge, `runc run` of
a bundle of the same rootfs (the floor), and `docker run --rm --network none` / `podman run
--rm --network none` of the same image. Then one detached `sleep` container in Carte and in
Docker gives the RSS of a Carte shim against a containerd shim (containerd-shim-runc-v2),
and the daemon's RSS after this light use.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.peers import ENV, PeerFailed, Peers, pids_named, pss_mb, rss_mb, run, timed
from bench.results import Result, interleave, median
from bench.runtime_true import make_bundle, time_runc

NAME = "container_run"
DEFAULT_RUNS = 10


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _container_parent(carte: list[str], name: str) -> int | None:
    """The pid of the process holding the container (its shim): its init's parent."""
    inspected = json.loads(run([*carte, "--format", "json", "inspect", name]))
    record = inspected[0] if isinstance(inspected, list) else inspected
    parent = _ppid(int(record["state"]["pid"]))
    return parent if "shim" in " ".join(_cmdline(parent)) else None


def carte_shims(peers: Peers, mode: str = "factory") -> list[int]:
    """This daemon's shim processes of a mode (`carte shim factory` naming its run root)."""
    marker = str(peers.work)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        after = argv[argv.index("shim") + 1 : argv.index("shim") + 2] if "shim" in argv else []
        if after == [mode] and any(marker in arg for arg in argv):
            found.append(int(entry.name))
    return found


def measure(peers: Peers, runs: int) -> list[Result]:
    carte = peers.installed_carte()
    peers.import_busybox("carte")
    bundle = make_bundle(peers)
    candidates = {
        "carte none": lambda: timed([*carte, "run", "--rm", "--network", "none", "bb", "true"]),
        "carte bridge": lambda: timed([*carte, "run", "--rm", "bb", "true"]),
        "runc": lambda: time_runc(peers, bundle),
    }
    notes = []
    try:
        docker = peers.docker()
        peers.import_busybox("docker")
        argv = ["docker", "run", "--rm", "--network", "none", "bb:latest", "true"]
        candidates["docker"] = lambda: timed(argv, docker)
    except PeerFailed as failure:
        notes.append(f"docker skipped: {failure}")
    try:
        podman, podman_env = peers.podman()
        peers.import_busybox("podman")
        podman_run = [*podman, "run", "--rm", "--network", "none", "bb:latest", "true"]
        timed(podman_run, podman_env)
        candidates["podman"] = lambda: timed(podman_run, podman_env)
    except PeerFailed as failure:
        notes.append(f"podman skipped: {failure}")
    samples = interleave(candidates, runs)
    none = median(samples["carte none"])
    title = "`run --rm --network none bb true`"
    rows = [
        Result.of_medians(NAME, f"{title} vs `runc run`", samples, "carte none", "runc", "runc",
                          limit=2.0, runs=runs, note="; ".join(notes)),
    ]  # fmt: skip
    for peer in ("docker", "podman"):
        if peer in samples:
            rows.append(
                Result(NAME, f"{title} vs {peer.capitalize()}", none, "s",
                       median(samples[peer]), peer, runs=runs)
            )  # fmt: skip
    # Each round's two runs are next to each other in time: their difference is less
    # disturbed by the machine's drifting load than the difference of the two medians.
    pairs = zip(samples["carte bridge"], samples["carte none"], strict=True)
    added = median([(bridge - alone) * 1000 for bridge, alone in pairs])
    fastest = (min(samples["carte bridge"]) - min(samples["carte none"])) * 1000
    rows.append(
        Result(NAME, "bridge attach: default network minus `--network none`, per round",
               added, "ms", limit=15.0, runs=runs,
               note=f"{fastest:+.0f} ms between the fastest runs")
    )  # fmt: skip
    rows += _shim_memory(peers, carte)
    rows.append(
        Result(NAME, "daemon RSS after these runs", rss_mb(peers.carte_pid), "MB", limit=50.0)
    )
    return rows


def _shim_memory(peers: Peers, carte: list[str]) -> list[Result]:
    run([*carte, "run", "-d", "--network", "none", "--name", "bench-sleep", "bb", "sleep", "600"])
    time.sleep(1.0)
    shim = _container_parent(carte, "bench-sleep")
    if shim is None:
        return [Result(NAME, "shim RSS", float("nan"), "MB", note="no Carte shim found")]
    ours, ours_pss = rss_mb(shim), pss_mb(shim)
    theirs = None
    try:
        docker = peers.docker()
        run(["docker", "run", "-d", "--network", "none", "bb:latest", "sleep", "600"], docker)
        time.sleep(1.0)
        marker = str(peers.work)
        containerd_shims = [
            pid
            for pid in pids_named("containerd-shim-runc-v2")
            if any(marker in arg for arg in _cmdline(pid))
        ]
        if containerd_shims:
            theirs = median([rss_mb(pid) for pid in containerd_shims])
    except PeerFailed:
        pass
    run([*carte, "rm", "-f", "bench-sleep"], ENV)
    factory = [rss_mb(pid) for pid in carte_shims(peers, "factory")]
    note = f"PSS {ours_pss:.1f} MB; " + (
        f"shim factory {factory[0]:.1f} MB" if factory else "no shim factory"
    )
    rows = [Result(NAME, "shim RSS, one `sleep` container", ours, "MB", limit=8.0, note=note)]
    if theirs is not None:
        rows.append(
            Result(NAME, "shim RSS vs a containerd shim (containerd-shim-runc-v2)", ours, "MB",
                   theirs, "containerd shim", limit=0.7)
        )  # fmt: skip
    return rows
