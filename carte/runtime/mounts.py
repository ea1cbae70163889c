"""Mount one OCI spec mount entry inside a container root.

Mount options are split into mount(2) flags, propagation changes and the filesystem's data
string. Targets are resolved with `paths.open_in_root`, so no image symlink can move a mount
outside the root. Runs in the container's mount namespace before pivot_root; every function
raises `OSError` naming the mount on failure and leaves already-made mounts to die with the
namespace.
"""

from __future__ import annotations

import os

from carte.runtime import syscalls as sc
from carte.runtime.paths import fd_path, opened_in_root
from carte.runtime.spec import Mount

__all__ = ["MountOptions", "mount_entry", "parse_options"]

_FLAGS: dict[str, tuple[bool, int]] = {
    # option: (clear?, flag)
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "nosuid": (False, sc.MS_NOSUID),
    "suid": (True, sc.MS_NOSUID),
    "nodev": (False, sc.MS_NODEV),
    "dev": (True, sc.MS_NODEV),
    "noexec": (False, sc.MS_NOEXEC),
    "exec": (True, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS),
    "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC),
    "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK),
    "nomand": (True, sc.MS_MANDLOCK),
    "atime": (True, sc.MS_NOATIME),
    "noatime": (False, sc.MS_NOATIME),
    "diratime": (True, sc.MS_NODIRATIME),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "bind": (False, sc.MS_BIND),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "lazytime": (False, sc.MS_LAZYTIME),
    "nolazytime": (True, sc.MS_LAZYTIME),
}

PROPAGATION = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# Options engines pass that are not for the kernel.
_IGNORED = {"defaults", "tmpcopyup", "notmpcopyup", "idmap", "ridmap", "copy-symlink", "z", "Z"}


class MountOptions:
    """A mount's options split for mount(2)."""

    __slots__ = ("data", "flags", "propagation")

    def __init__(self, flags: int, propagation: list[int], data: str) -> None:
        self.flags = flags
        self.propagation = propagation
        self.data = data


def parse_options(options: list[str]) -> MountOptions:
    """Split OCI mount options into flags, propagation changes and the data string."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        elif option not in _IGNORED:
            data.append(option)
    return MountOptions(flags, propagation, ",".join(data))


def _apply_propagation(target: str, propagation: list[int]) -> None:
    for change in propagation:
        sc.mount(None, target, None, change)


def _remount_bind(root_fd: int, destination: str, flags: int) -> None:
    # The fd used for the mount still names the covered directory; reopen to reach the new mount.
    with opened_in_root(root_fd, destination) as fd:
        keep = flags & (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        keep |= flags & (sc.MS_NOATIME | sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME)
        sc.mount(None, fd_path(fd), None, sc.MS_BIND | sc.MS_REMOUNT | keep)


def mount_entry(
    root_fd: int, entry: Mount, *, bundle: str, cgroup_dirs: dict[str, str] | None = None
) -> None:
    """Mount `entry` at its destination inside the root open at `root_fd`.

    Bind mounts take their source from the host (relative sources are relative to `bundle`);
    their destination is created as a directory or file to match the source. A "cgroup" mount
    shows the container's own cgroup directories (`cgroup_dirs`, hierarchy name -> host
    directory). Raises `OSError` naming the mount; `ValueError` for a relative destination.
    """
    if not entry.destination.startswith("/"):
        raise ValueError(f'mount destination "{entry.destination}" must be an absolute path')
    options = parse_options(entry.options)
    is_bind = bool(options.flags & sc.MS_BIND) or entry.type == "bind"
    if is_bind:
        _mount_bind(root_fd, entry, options, bundle)
    elif entry.type == "cgroup":
        _mount_cgroup(root_fd, entry, options, cgroup_dirs or {})
    else:
        with opened_in_root(root_fd, entry.destination, create="dir") as fd:
            try:
                sc.mount(
                    entry.source or entry.type,
                    fd_path(fd),
                    entry.type,
                    options.flags,
                    options.data,
                )
            except OSError as error:
                if entry.type == "sysfs" and error.errno == 1:
                    # Outside a network namespace we own, sysfs cannot be mounted: bind the host's.
                    sc.mount("/sys", fd_path(fd), None, sc.MS_BIND | sc.MS_REC)
                    _remount_bind(root_fd, entry.destination, options.flags)
                else:
                    raise OSError(
                        error.errno, f"mount {entry.destination}: {error.strerror}"
                    ) from None
    if options.propagation:
        with opened_in_root(root_fd, entry.destination) as fd:
            _apply_propagation(fd_path(fd), options.propagation)


def _mount_bind(root_fd: int, entry: Mount, options: MountOptions, bundle: str) -> None:
    source = entry.source or ""
    if not source.startswith("/"):
        source = os.path.join(bundle, source)
    try:
        is_dir = os.path.isdir(source)
        os.stat(source)
    except OSError as error:
        raise OSError(error.errno, f"bind mount source {source}: {error.strerror}") from None
    with opened_in_root(root_fd, entry.destination, create="dir" if is_dir else "file") as fd:
        flags = sc.MS_BIND | (options.flags & sc.MS_REC)
        sc.mount(source, fd_path(fd), None, flags)
    extra = options.flags & ~(sc.MS_BIND | sc.MS_REC)
    if extra:
        _remount_bind(root_fd, entry.destination, options.flags)


def _mount_cgroup(
    root_fd: int, entry: Mount, options: MountOptions, cgroup_dirs: dict[str, str]
) -> None:
    """/sys/fs/cgroup. Each hierarchy shows the container's own cgroup directory, bound from
    the host (cheap, and possible from a user namespace); a hierarchy Carte has no directory
    in (name=systemd) is mounted through the cgroup namespace instead. A unified-only host gets
    the container's cgroup2 directory at /sys/fs/cgroup itself."""
    if "" in cgroup_dirs:
        _bind_cgroup_dir(root_fd, entry.destination, cgroup_dirs[""], options.flags)
        return
    flags = options.flags & ~sc.MS_RDONLY
    with opened_in_root(root_fd, entry.destination, create="dir") as fd:
        sc.mount("tmpfs", fd_path(fd), "tmpfs", flags, "mode=755")
    for name, (fstype, data) in _host_cgroup_mounts().items():
        destination = f"{entry.destination}/{name}"
        if name in cgroup_dirs:
            _bind_cgroup_dir(root_fd, destination, cgroup_dirs[name], options.flags)
            continue
        with opened_in_root(root_fd, destination, create="dir") as fd:
            try:
                sc.mount("cgroup", fd_path(fd), fstype, options.flags, data)
            except PermissionError:
                # v1 hierarchies cannot be mounted from a user namespace; leave the dir empty.
                continue
    if options.flags & sc.MS_RDONLY:
        _remount_bind_tmpfs_readonly(root_fd, entry.destination, flags)


def _bind_cgroup_dir(root_fd: int, destination: str, host_dir: str, flags: int) -> None:
    with opened_in_root(root_fd, destination, create="dir") as fd:
        sc.mount(host_dir, fd_path(fd), None, sc.MS_BIND)
    _remount_bind(root_fd, destination, flags | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def _remount_bind_tmpfs_readonly(root_fd: int, destination: str, flags: int) -> None:
    with opened_in_root(root_fd, destination) as fd:
        sc.mount(None, fd_path(fd), None, sc.MS_REMOUNT | sc.MS_RDONLY | flags, "mode=755")


def _host_cgroup_mounts() -> dict[str, tuple[str, str]]:
    """Cgroup hierarchies mounted on the host under /sys/fs/cgroup: name -> (fstype, data).

    The name is the directory under /sys/fs/cgroup ("" when cgroup2 is mounted there itself).
    """
    found: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            mount_point = fields[4]
            fstype, super_options = fields[separator + 1], fields[separator + 3]
            if fstype not in ("cgroup", "cgroup2") or not mount_point.startswith("/sys/fs/cgroup"):
                continue
            name = mount_point.removeprefix("/sys/fs/cgroup").strip("/")
            if fstype == "cgroup":
                wanted = [o for o in super_options.split(",") if o not in ("rw", "ro")]
                data = ",".join(wanted)
            else:
                data = ""
            found[name] = (fstype, data)
    return found
