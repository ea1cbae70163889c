"""Build the container's root filesystem in its own mount namespace and pivot into it.

Order (runc's): make the host's / non-shared for us; mount the root (a bind of the bundle's root
directory onto itself, or an overlay when the spec has an overlay mount for "/"); mount the
spec's mounts; fill /dev; pivot_root and detach the old root; then mask paths, make paths
read-only and finally make / read-only if asked. All of it happens inside the container's mount
namespace, so nothing here is ever visible on the host and nothing needs unmounting afterwards.

Functions raise `OSError` naming the failing path; the caller reports it to the parent and exits.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from carte.runtime import syscalls as sc
from carte.runtime.mounts import PROPAGATION, mount_entry, parse_options
from carte.runtime.paths import fd_path, is_directory, open_in_root, opened_in_root
from carte.runtime.spec import LinuxDevice, Mount, Spec

__all__ = [
    "DEFAULT_DEVICES",
    "finish_rootfs",
    "pivot_into",
    "prepare_rootfs",
    "root_overlay",
    "root_path",
]

DEFAULT_DEVICES = ("null", "zero", "full", "tty", "random", "urandom")
_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
)
# linux.rootfsPropagation, applied to the container's / once it is the root (config-linux.md:
# shared = a new peer group, not shared with the host; slave = receives the host's mounts;
# private = receives nothing; unbindable = private and cannot be bind-mounted). "" keeps the
# rslave every root starts as.
_PROPAGATION_OF_ROOT = {"": 0, **PROPAGATION}


def root_path(spec: Spec, bundle: str) -> str:
    """The absolute path of the spec's root directory (relative paths are under `bundle`)."""
    return os.path.normpath(os.path.join(bundle, spec.root.path))


def root_overlay(spec: Spec) -> Mount | None:
    """The spec's overlay mount for "/", if the root is an overlay."""
    for entry in spec.mounts:
        if entry.destination == "/" and entry.type == "overlay":
            return entry
    return None


def prepare_rootfs(
    spec: Spec, bundle: str, *, in_user_namespace: bool, cgroup_dirs: dict[str, str]
) -> int:
    """Mount the root and everything in it; return an O_PATH fd of the new root.

    `cgroup_dirs` maps each hierarchy under /sys/fs/cgroup to the container's own cgroup
    directory, bound at /sys/fs/cgroup/<name> inside. Must run in a fresh mount namespace.
    Raises `OSError` naming what failed.
    """
    propagation = spec.linux.rootfs_propagation
    if propagation not in _PROPAGATION_OF_ROOT:
        raise ValueError(f'linux.rootfsPropagation "{propagation}" is not a propagation type')
    # Nothing we mount may reach the host: every copied mount receives only, or (private
    # propagation asked) nothing at all. The asked propagation is set once / is ours.
    private = propagation in ("private", "rprivate", "unbindable", "runbindable")
    sc.mount(None, "/", None, (sc.MS_PRIVATE if private else sc.MS_SLAVE) | sc.MS_REC)
    path = root_path(spec, bundle)
    if not os.path.isdir(path):
        raise FileNotFoundError(2, f"root.path {path}: no such directory")
    overlay = root_overlay(spec)
    if overlay is not None:
        options = parse_options(overlay.options)
        sc.mount(overlay.source or "overlay", path, "overlay", options.flags, options.data)
    else:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    root_fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    dev_is_tmpfs = False
    for entry in spec.mounts:
        if entry is overlay:
            continue
        mount_entry(root_fd, entry, bundle=bundle, cgroup_dirs=cgroup_dirs)
        if os.path.normpath(entry.destination) == "/dev":
            dev_is_tmpfs = entry.type == "tmpfs"
    if dev_is_tmpfs:
        _populate_dev(root_fd, spec.linux.devices, in_user_namespace=in_user_namespace)
    return root_fd


def _populate_dev(root_fd: int, devices: list[LinuxDevice], *, in_user_namespace: bool) -> None:
    for name in DEFAULT_DEVICES:
        _bind_host_device(root_fd, f"/dev/{name}")
    for device in devices:
        if device.path.removeprefix("/dev/") in DEFAULT_DEVICES:
            continue
        if in_user_namespace:
            _bind_host_device(root_fd, device.path)
        else:
            _make_device(root_fd, device)
    with opened_in_root(root_fd, "/dev") as dev_fd:
        real_dev = os.open(fd_path(dev_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name, target in _DEV_LINKS:
                try:
                    os.symlink(target, name, dir_fd=real_dev)
                except FileExistsError:
                    pass
        finally:
            os.close(real_dev)


def _bind_host_device(root_fd: int, path: str) -> None:
    with opened_in_root(root_fd, path, create="file") as fd:
        sc.mount(path, fd_path(fd), None, sc.MS_BIND)


_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def _make_device(root_fd: int, device: LinuxDevice) -> None:
    parent, _, name = device.path.strip("/").rpartition("/")
    kind = _DEVICE_TYPES.get(device.type)
    if kind is None:
        raise ValueError(f'linux.devices "{device.path}": unknown type "{device.type}"')
    mode = device.file_mode if device.file_mode is not None else 0o666
    with opened_in_root(root_fd, parent, create="dir") as parent_fd:
        real_parent = os.open(fd_path(parent_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.unlink(name, dir_fd=real_parent)
            except FileNotFoundError:
                pass
            os.mknod(
                name,
                kind | (mode & 0o7777),
                os.makedev(device.major, device.minor),
                dir_fd=real_parent,
            )
            os.chown(
                name, device.uid or 0, device.gid or 0, dir_fd=real_parent, follow_symlinks=False
            )
        finally:
            os.close(real_parent)


def pivot_into(root_fd: int) -> None:
    """Make the root open at `root_fd` the process's / and detach the old root entirely.

    Uses pivot_root(".", ".") so no directory for the old root is needed inside the image.
    Raises `OSError`; on failure the process must exit (its mount namespace is then freed).
    """
    old_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(root_fd)
        sc.pivot_root(".", ".")
        os.fchdir(old_root)
        # Stop unmount events reaching the host's mounts before detaching them.
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
    finally:
        os.close(old_root)
    os.chdir("/")


def finish_rootfs(spec: Spec) -> None:
    """After pivot_root: sysctls, masked paths, read-only paths, then a read-only / if asked.

    Paths that do not exist are skipped, as runc does. Raises `OSError` naming the path.
    """
    propagation = _PROPAGATION_OF_ROOT[spec.linux.rootfs_propagation]
    if propagation:
        sc.mount(None, "/", None, propagation)
    for key, value in spec.linux.sysctl.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as sysctl:
            sysctl.write(value)
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in spec.linux.masked_paths:
            _mask(root_fd, path)
        for path in spec.linux.readonly_paths:
            _make_readonly(root_fd, path)
    finally:
        os.close(root_fd)
    if spec.root.readonly:
        sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)


@contextmanager
def _opened_if_present(root_fd: int, path: str) -> Iterator[int | None]:
    """The O_PATH fd of `path` in the root, closed after the block; None for a path the root
    lacks (skipped, as runc does)."""
    try:
        fd = open_in_root(root_fd, path)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _mask(root_fd: int, path: str) -> None:
    with _opened_if_present(root_fd, path) as fd:
        if fd is None:
            return
        if is_directory(fd):
            sc.mount("tmpfs", fd_path(fd), "tmpfs", sc.MS_RDONLY, "size=0")
        else:
            sc.mount("/dev/null", fd_path(fd), None, sc.MS_BIND)


def _make_readonly(root_fd: int, path: str) -> None:
    with _opened_if_present(root_fd, path) as fd:
        if fd is None:
            return
        sc.mount(fd_path(fd), fd_path(fd), None, sc.MS_BIND | sc.MS_REC)
    with opened_in_root(root_fd, path) as fd:
        flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
        sc.mount(None, fd_path(fd), None, flags | sc.MS_NOEXEC)
