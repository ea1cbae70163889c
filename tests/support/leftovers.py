"""What a test daemon may leave on the host, found and removed: its containers' processes,
cgroups and state, its mounts, its bridges and their veths, its nftables tables.

`host_leftovers` lists what is still there (a module fixture asserts the list is empty once
its daemon stopped); `remove_leftovers` and `remove_host_network_state` delete it even when the
daemon is dead, so one failed test does not spill into the next.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from support.daemon import Daemon, remove_host_network_state

__all__ = [
    "CGROUP_ROOT",
    "cgroup_dirs",
    "cgroup_parents",
    "container_leftovers",
    "host_leftovers",
    "remove_cgroup_parents",
    "remove_host_network_state",
    "remove_leftovers",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(container_id: str) -> list[Path]:
    """The container's cgroup directories that exist (v1 controllers and the unified tree)."""
    found = []
    for controller in CGROUP_ROOT.iterdir():
        candidate = controller / "carte" / container_id
        if candidate.is_dir():
            found.append(candidate)
    return found


def cgroup_parents() -> set[Path]:
    """The `carte` parent cgroups (one per v1 controller and in the unified tree) that exist."""
    return {c / "carte" for c in CGROUP_ROOT.iterdir() if (c / "carte").is_dir()}


def remove_cgroup_parents(kept: set[Path]) -> None:
    """Remove the empty `carte` parent cgroups not in `kept`: the daemons the suite ran share
    them, so none removes them itself. One with a container's cgroup in it stays (EBUSY)."""
    for parent in cgroup_parents() - kept:
        try:
            parent.rmdir()
        except OSError:
            continue


def container_leftovers(daemon: Daemon, container_id: str) -> list[str]:
    """Everything of `container_id` still on the host: record dir, runtime state, cgroups."""
    left = [str(p) for p in cgroup_dirs(container_id)]
    for path in (
        daemon.root / "containers" / container_id,
        daemon.run_root / "runtime" / container_id,
    ):
        if path.exists():
            left.append(str(path))
    return left


def _known_container_ids(daemon: Daemon) -> set[str]:
    ids: set[str] = set()
    for directory in (daemon.run_root / "runtime", daemon.root / "containers"):
        if directory.is_dir():
            ids.update(p.name for p in directory.iterdir() if len(p.name) == 64)
    return ids


def remove_leftovers(daemon: Daemon) -> None:
    """Kill and remove every container the daemon's directories still know (the daemon may be
    dead): their processes, cgroups and runtime state."""
    from carte.runtime.container import delete

    if daemon.process is None or daemon.process.poll() is not None:
        # A daemon SIGKILLed soon after its last default-network container left keeps its bridge.
        remove_host_network_state(daemon.root)
    state_dir = daemon.run_root / "runtime"
    for container_id in _known_container_ids(daemon):
        try:
            delete(state_dir, container_id, force=True)
        except Exception:  # best-effort cleanup of a test's leftovers
            pass
        for cgroup in cgroup_dirs(container_id):
            procs = cgroup / "cgroup.procs"
            for pid in procs.read_text().split() if procs.exists() else []:
                subprocess.run(["kill", "-9", pid], check=False)
            try:
                cgroup.rmdir()
            except OSError:
                pass


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def bridge_ports(bridge: str) -> list[str]:
    """The links attached to `bridge` (its containers' host veth ends)."""
    ports = Path("/sys/class/net", bridge, "brif")
    return sorted(p.name for p in ports.iterdir()) if ports.is_dir() else []


def nft_tables(daemon: Daemon) -> list[str]:
    """The daemon's nftables tables still on the host (its own and its services' -lb)."""
    from carte.handlers.network._records import nft_table_name

    table = nft_table_name(daemon.root)
    found = []
    for name in (table, f"{table}-lb"):
        probe = subprocess.run(["nft", "list", "table", "ip", name], capture_output=True)
        if probe.returncode == 0:
            found.append(f"nft table ip {name}")
    return found


def _mount_points_under(directory: Path) -> list[str]:
    prefix = str(directory)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


def mounts_under(directory: Path) -> list[str]:
    """Mount points of this mount namespace at or below `directory`."""
    return [f"mount {point}" for point in _mount_points_under(directory)]


def unmount_under(directory: Path) -> None:
    """Detach every mount at or below `directory`, deepest first (what a killed daemon left:
    its volumes mount, a container's rootfs), so removing the directory removes only it."""
    for point in sorted(_mount_points_under(directory), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def processes_mentioning(directory: Path) -> list[str]:
    """Live processes (a daemon, shims, container init) whose command line names `directory`."""
    needle = str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in argv:
            command = argv.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"process {entry.name}: {command[:120]}")
    return found


def host_leftovers(daemon: Daemon, bridges: Iterable[str] = ()) -> list[str]:
    """Everything of a stopped daemon still on the host: its containers' cgroups and state,
    mounts below its directory, processes naming it, the `bridges` it used (and their veths),
    its nftables tables. Empty when it cleaned up after itself."""
    from carte.handlers.network._records import default_bridge_name

    left: list[str] = []
    for container_id in sorted(_known_container_ids(daemon)):
        left += container_leftovers(daemon, container_id)
    left += mounts_under(daemon.workdir)
    left += processes_mentioning(daemon.workdir)
    for bridge in sorted({default_bridge_name(daemon.root, ""), *bridges}):
        if link_exists(bridge):
            left.append(f"bridge {bridge} (ports: {', '.join(bridge_ports(bridge)) or 'none'})")
    left += nft_tables(daemon)
    return left
