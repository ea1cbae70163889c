"""The driver interface every cgroup implementation offers, and the behaviour they share.

A `Cgroup` is one container's cgroup, named by the spec's ``linux.cgroupsPath``; it may span
several directories (one per v1 hierarchy) or one (v2). Methods are synchronous and block only
briefly: waits (freezing, tasks leaving on destroy) are bounded and raise `Internal` when the
kernel does not get there in a few seconds.
"""

from __future__ import annotations

import abc
import os
import signal
from pathlib import Path, PurePosixPath

from carte.api.errors import CarteError, InvalidArgument
from carte.runtime.cgroups.cgroupfs import (
    read_pids,
    remove_directory,
    wait_until,
    walk_bottom_up,
    write_file,
)
from carte.runtime.cgroups.devices import default_devices
from carte.runtime.cgroups.resources import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxMemory,
    LinuxNetwork,
    LinuxResources,
)
from carte.runtime.cgroups.stats import CgroupStats

DEFAULT_PARENT = "/carte"


def normalize_cgroups_path(cgroups_path: str) -> str:
    """The absolute cgroup path for a spec's ``cgroupsPath``; relative ones go under /carte.

    Raises `InvalidArgument` for an empty path, ``..`` components, or a systemd-style
    "slice:prefix:name" path (Carte manages cgroupfs directly).
    """
    if not cgroups_path.strip("/"):
        raise InvalidArgument(
            f"linux.cgroupsPath {cgroups_path!r} is empty; give a path such as /carte/ID"
        )
    if ":" in cgroups_path:
        raise InvalidArgument(
            f"linux.cgroupsPath {cgroups_path!r} is a systemd slice path; Carte manages cgroupfs "
            "paths, so give a path such as /carte/ID"
        )
    parts = PurePosixPath(cgroups_path).parts
    if ".." in parts:
        raise InvalidArgument(
            f"linux.cgroupsPath {cgroups_path!r} contains '..'; give a path without it"
        )
    if not cgroups_path.startswith("/"):
        return f"{DEFAULT_PARENT}/{cgroups_path.strip('/')}"
    return "/" + "/".join(part for part in parts if part != "/")


class Cgroup(abc.ABC):
    """One container's cgroup; `path` is its absolute cgroup path such as "/carte/ID"."""

    def __init__(self, path: str) -> None:
        self.path = path

    @abc.abstractmethod
    def paths(self) -> dict[str, Path]:
        """The directory of this cgroup in each hierarchy, keyed by controller (or "unified")."""

    @abc.abstractmethod
    def create(self) -> None:
        """Create the cgroup (and missing ancestors) in every hierarchy; existing is fine."""

    def apply(self, resources: LinuxResources | None) -> None:
        """Set the limits of a new cgroup from the spec, and its device rules: the spec's, or
        `default_devices()` when it lists none (a container never gets every device by omission).

        Raises `InvalidArgument` when the kernel rejects a value, `Unavailable` when a limit
        needs a controller this host lacks.
        """
        devices = resources.devices if resources is not None else []
        self._set_devices(devices or default_devices())
        if resources is not None:
            self._set_limits(resources)

    def update(self, resources: LinuxResources) -> None:
        """Change the limits of a running container; sections left out stay as they are."""
        self._set_limits(resources)
        if resources.devices:
            self._set_devices(resources.devices)

    @abc.abstractmethod
    def stats(self) -> CgroupStats:
        """A reading of the cgroup's counters; controllers missing here read as zero."""

    @abc.abstractmethod
    def freeze(self) -> None:
        """Freeze every task and return once the kernel reports the cgroup frozen."""

    @abc.abstractmethod
    def thaw(self) -> None:
        """Let frozen tasks run again; returns once the kernel reports them thawed."""

    @abc.abstractmethod
    def oom_kill_count(self) -> int:
        """How many processes the OOM killer has killed in this cgroup so far."""

    @abc.abstractmethod
    def _kill_all_at_once(self) -> bool:
        """SIGKILL every task atomically if the kernel offers it (cgroup.kill); False if not."""

    def exists(self) -> bool:
        """Whether the cgroup exists in any hierarchy."""
        return any(directory.is_dir() for directory in self.paths().values())

    def add_process(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup in every hierarchy."""
        for directory in self._unique_directories():
            write_file(directory, "cgroup.procs", pid)

    def pids(self) -> list[int]:
        """Sorted ids of every process in this cgroup and its child cgroups."""
        found: set[int] = set()
        for directory in self._unique_directories():
            for cgroup_dir in walk_bottom_up(directory):
                found.update(read_pids(cgroup_dir))
        return sorted(found)

    def oom_killed_since(self, before: int) -> bool:
        """Whether the OOM killer struck since `oom_kill_count` returned ``before``."""
        return self.oom_kill_count() > before

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every process in the cgroup; processes already gone are skipped.

        SIGKILL goes through cgroup.kill where the kernel has it; otherwise the tasks are frozen
        first (when a freezer exists) so that none can fork away while being signalled.
        """
        if sig == signal.SIGKILL and self._kill_all_at_once():
            return
        frozen = sig == signal.SIGKILL and self._can_freeze()
        if frozen:
            try:
                self.freeze()
            except CarteError:
                # A task stuck in the kernel can keep the group from freezing; SIGKILL still
                # reaches it, so signal without the freeze rather than not at all.
                frozen = False
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self.thaw()

    def destroy(self) -> None:
        """Kill what is left, wait for it to leave, and remove every directory, deepest first.

        Idempotent: a cgroup that is already gone, in some or all hierarchies, is fine. Raises
        `Internal` when a task refuses to leave within a few seconds.
        """
        if not self.exists():
            return
        if self.pids():
            self.kill(signal.SIGKILL)
            wait_until(lambda: not self.pids(), what=f"every process left cgroup {self.path}")
        for directory in self._unique_directories():
            for cgroup_dir in walk_bottom_up(directory):
                remove_directory(cgroup_dir)

    def _can_freeze(self) -> bool:
        return True

    # -- limits: the order and the files both versions share; the rest is each version's ------

    _HUGETLB_LIMIT = "max"
    """The suffix of the hugetlb limit file: hugetlb.<size>.<this>."""

    def _set_limits(self, resources: LinuxResources) -> None:
        if resources.cpu is not None:
            self._set_cpu(resources.cpu)
        if resources.memory is not None:
            self._set_memory(resources.memory)
        if resources.pids is not None:
            limit = resources.pids.limit
            write_file(self._dir_for("pids"), "pids.max", limit if limit > 0 else "max")
        if resources.block_io is not None:
            self._set_block_io(resources.block_io)
        for hugepage in resources.hugepage_limits:
            name = f"hugetlb.{hugepage.page_size}.{self._HUGETLB_LIMIT}"
            write_file(self._dir_for("hugetlb"), name, hugepage.limit)
        if resources.network is not None:
            self._set_network(resources.network)
        for device, rdma in resources.rdma.items():
            handles = "max" if rdma.hca_handles is None else rdma.hca_handles
            objects = "max" if rdma.hca_objects is None else rdma.hca_objects
            value = f"{device} hca_handle={handles} hca_object={objects}"
            write_file(self._dir_for("rdma"), "rdma.max", value)
        if resources.unified:
            self._set_unified(resources.unified)

    @abc.abstractmethod
    def _dir_for(self, controller: str) -> Path:
        """The directory holding `controller`'s files; `Unavailable` if the host lacks it."""

    @abc.abstractmethod
    def _set_devices(self, rules: list[LinuxDeviceCgroup]) -> None: ...

    @abc.abstractmethod
    def _set_cpu(self, cpu: LinuxCPU) -> None: ...

    @abc.abstractmethod
    def _set_memory(self, memory: LinuxMemory) -> None: ...

    @abc.abstractmethod
    def _set_block_io(self, block_io: LinuxBlockIO) -> None: ...

    @abc.abstractmethod
    def _set_network(self, network: LinuxNetwork) -> None: ...

    @abc.abstractmethod
    def _set_unified(self, unified: dict[str, str]) -> None:
        """``linux.resources.unified``: cgroup v2 file name -> value."""

    def _unique_directories(self) -> list[Path]:
        unique: list[Path] = []
        for directory in self.paths().values():
            if directory not in unique:
                unique.append(directory)
        return unique
