"""`--ipc shareable` and `--ipc container:NAME`, as Docker runs them.

A shareable container gets its own IPC namespace and a /dev/shm that lives on the host: a
tmpfs mounted at ROOT/containers/<id>/shm (nosuid, nodev, noexec, mode 1777, 64 MiB, as
Docker's default shm size) before its shim is made, bound to /dev/shm inside, unmounted
when the container is removed. A container with `--ipc container:NAME` joins that
container's IPC namespace and binds the same tmpfs to its /dev/shm, so System V IPC and
POSIX shared memory are shared both ways. The target must be shareable and running.
"""

from __future__ import annotations

import os
from pathlib import Path

from carte.api.errors import Conflict
from carte.runtime import syscalls
from carte.runtime.spec import Mount, Spec

SHAREABLE = "shareable"


def shm_dir(container_dir: Path) -> Path:
    """Where a shareable container's /dev/shm lives on the host."""
    return container_dir / "shm"


def shm_size_option(size: int) -> str:
    """The tmpfs option for a /dev/shm of `size` bytes (0: Docker's 64 MiB)."""
    return f"size={-(-size // 1024)}k" if size else "size=65536k"


def mount_shm(container_dir: Path, size: int = 0) -> None:
    """Mount the shareable container's /dev/shm tmpfs (`size` bytes, 0: 64 MiB) unless it is
    there (a restart, or the daemon restarted). Raises `OSError`."""
    target = shm_dir(container_dir)
    target.mkdir(mode=0o755, exist_ok=True)
    if not os.path.ismount(target):
        flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
        syscalls.mount("shm", str(target), "tmpfs", flags, f"mode=1777,{shm_size_option(size)}")


def unmount_shm(container_dir: Path) -> None:
    """Unmount a shareable container's /dev/shm (detached: a joiner may still use it)."""
    target = shm_dir(container_dir)
    if os.path.ismount(target):
        syscalls.umount2(str(target), syscalls.MNT_DETACH)


def bind_shm(spec: Spec, source: Path) -> None:
    """Make the container's /dev/shm the host directory `source`."""
    spec.mounts = [
        Mount(
            destination="/dev/shm",
            type="bind",
            source=str(source),
            options=["rbind", "nosuid", "nodev", "noexec"],
        )
        if mount.destination == "/dev/shm"
        else mount
        for mount in spec.mounts
    ]


def check_shareable(name: str, ipc_mode: str) -> None:
    """`Conflict` when the container `name` (its `ipc_mode`) cannot be joined."""
    if ipc_mode != SHAREABLE:
        raise Conflict(
            f'cannot join the IPC namespace of container "{name}": it is not shareable '
            f"(its --ipc is {ipc_mode or 'private'}); run it with --ipc shareable"
        )
