"""Run options + image config -> the container's effective config and its OCI runtime spec.

`merge_image_defaults` gives the config `docker inspect` shows (the image's Cmd, Env,
WorkingDir, User, Labels, StopSignal, Healthcheck filled in where the user gave none).
`build_spec` turns that config into config.json: Carte's default spec (Docker-level isolation)
with the overlay root, mounts, user, limits, capabilities and seccomp the options ask for.
Both are pure (no I/O except reading the image's /etc/passwd and /etc/group for `-u name`) and
raise `InvalidArgument` naming the option for bad input.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from typing import Literal

import msgspec

from carte.api.containers import (
    ContainerConfig,
    HealthConfig,
    MountSpec,
    PortSpec,
    Resources,
    namespaced_sysctl,
)
from carte.api.errors import InvalidArgument
from carte.handlers.containers._ipc import SHAREABLE, bind_shm, shm_dir, shm_size_option
from carte.image import oci
from carte.runtime.capabilities import capabilities_from, resolve_cap_changes
from carte.runtime.cgroups.resources import LinuxCPU, LinuxMemory, LinuxPids, LinuxResources
from carte.runtime.paths import open_in_root
from carte.runtime.seccomp import profile_for_option
from carte.runtime.spec import (
    DEFAULT_PATH,
    INIT_ANNOTATION,
    Mount,
    POSIXRlimit,
    Spec,
    User,
    default_spec,
    overlay_root,
)

CPU_PERIOD = 100_000  # microseconds, Docker's CFS period for --cpus


class ContainerPaths(msgspec.Struct, frozen=True, kw_only=True):
    """The host paths of one container's own files (under ROOT/containers/<id>/)."""

    directory: Path

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def log(self) -> Path:
        return self.directory / "container.log"

    @property
    def hostname_file(self) -> Path:
        return self.directory / "hostname"

    @property
    def hosts_file(self) -> Path:
        return self.directory / "hosts"

    @property
    def resolv_conf(self) -> Path:
        return self.directory / "resolv.conf"


def merge_image_defaults(
    config: ContainerConfig, image: oci.ContainerConfig | None
) -> ContainerConfig:
    """The user's config with the image's defaults where the user set nothing (Docker's rules:
    an --entrypoint resets the image's Cmd; env is the image's then the user's)."""
    image = image or oci.ContainerConfig()
    entrypoint = config.entrypoint if config.entrypoint is not None else image.entrypoint
    if config.cmd:
        cmd: list[str] | None = list(config.cmd)
    elif config.entrypoint is not None:
        cmd = None
    else:
        cmd = list(image.cmd) if image.cmd else None
    env = _merge_env(list(image.env or []), config.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, DEFAULT_PATH)
    healthcheck = config.healthcheck
    if healthcheck is None and image.healthcheck is not None and image.healthcheck.test:
        healthcheck = _image_health(image.healthcheck)
    ports = list(config.ports)
    if config.publish_all:
        published = {(p.container_port, p.protocol) for p in ports}
        for exposed in sorted(image.exposed_ports or {}):
            number, _, protocol = exposed.partition("/")
            if not number.isdigit():
                continue
            kind: Literal["tcp", "udp"] = "udp" if protocol == "udp" else "tcp"
            if (int(number), kind) not in published:
                ports.append(PortSpec(container_port=int(number), protocol=kind))
    return msgspec.structs.replace(
        config,
        ports=ports,
        entrypoint=list(entrypoint) if entrypoint else None,
        cmd=cmd,
        env=env,
        workdir=config.workdir or image.working_dir or "",
        user=config.user or image.user or "",
        labels={**(image.labels or {}), **config.labels},
        stop_signal=config.stop_signal or image.stop_signal or "",
        healthcheck=healthcheck,
    )


def _image_health(check: oci.Healthcheck) -> HealthConfig:
    nanos = 1_000_000_000
    defaults = HealthConfig(test=[])
    return HealthConfig(
        test=list(check.test or []),
        interval=(check.interval / nanos) if check.interval else defaults.interval,
        timeout=(check.timeout / nanos) if check.timeout else defaults.timeout,
        retries=check.retries or defaults.retries,
        start_period=(check.start_period / nanos) if check.start_period else 0.0,
    )


def _merge_env(base: list[str], overrides: list[str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in [*base, *overrides]:
        key = item.partition("=")[0]
        merged[key] = item
    return list(merged.values())


def process_args(config: ContainerConfig) -> list[str]:
    """Entrypoint + Cmd; `InvalidArgument` when neither the user nor the image gives one."""
    args = [*(config.entrypoint or []), *(config.cmd or [])]
    if not args:
        raise InvalidArgument(
            f'image "{config.image}" has no command and none was given; '
            f"add one: carte run {config.image} COMMAND"
        )
    return args


def parse_signal(name: str, what: str = "--stop-signal") -> int:
    """SIGTERM, TERM, term or 15 -> 15; `InvalidArgument` naming `what` otherwise."""
    text = name.strip().upper()
    if text.isdigit() and 0 < int(text) < signal.NSIG:
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise InvalidArgument(
            f'{what} "{name}" is not a signal; use a name like TERM, SIGKILL or a number 1-64'
        ) from None


def build_spec(
    config: ContainerConfig,
    *,
    container_id: str,
    paths: ContainerPaths,
    lowerdirs: list[Path],
    mount_sources: dict[str, Path],
) -> Spec:
    """The container's config.json. `mount_sources` maps a volume name to its host directory
    (the handler created them); binds use their own source. Raises `InvalidArgument`."""
    spec = default_spec(args=process_args(config), rootfs=str(paths.rootfs))
    assert spec.process is not None
    if config.shm_size:
        for default in spec.mounts:
            if default.destination == "/dev/shm":
                kept = [o for o in default.options if not o.startswith("size=")]
                default.options = [*kept, shm_size_option(config.shm_size)]
    process = spec.process
    process.env = list(config.env)
    if not _has_env(process.env, "HOSTNAME"):
        process.env.append(f"HOSTNAME={config.hostname or container_id[:12]}")
    process.terminal = config.tty
    if config.workdir:
        if not config.workdir.startswith("/"):
            raise InvalidArgument(
                f'--workdir "{config.workdir}" is not an absolute path; use e.g. -w /app'
            )
        process.cwd = config.workdir
    process.user = resolve_user(config.user, lowerdirs, config.group_add)
    spec.hostname = config.hostname or container_id[:12]
    spec.domainname = config.domainname
    spec.root.readonly = config.read_only
    spec.mounts.insert(
        0, overlay_root([str(d) for d in lowerdirs], str(paths.upper), str(paths.work))
    )
    for file, target in (
        (paths.hostname_file, "/etc/hostname"),
        (paths.hosts_file, "/etc/hosts"),
        (paths.resolv_conf, "/etc/resolv.conf"),
    ):
        spec.mounts.append(
            Mount(destination=target, type="bind", source=str(file), options=["rbind", "rprivate"])
        )
    for mount in config.mounts:
        spec.mounts.append(_spec_mount(mount, mount_sources))
    if config.network == "host":
        spec.linux.namespaces = [ns for ns in spec.linux.namespaces if ns.type != "network"]
        spec.mounts = [m for m in spec.mounts if m.destination != "/etc/hostname"]
        spec.linux.namespaces = [ns for ns in spec.linux.namespaces if ns.type != "uts"]
        spec.hostname = ""  # the host's own; a hostname needs a uts namespace (OCI)
    _share_host_namespaces(spec, config, paths)
    _check_sysctls(config)
    spec.linux.sysctl = {**spec.linux.sysctl, **config.sysctls}
    spec.linux.resources = _resources(config.resources, spec.linux.resources)
    process.rlimits = _rlimits(config.resources, process.rlimits)
    caps = resolve_cap_changes(config.cap_add, config.cap_drop)
    process.capabilities = capabilities_from(caps)
    seccomp_option, no_new_privileges = _security_options(config.security_opt)
    process.no_new_privileges = no_new_privileges
    spec.linux.seccomp = profile_for_option(seccomp_option, caps)
    if config.init:
        spec.annotations[INIT_ANNOTATION] = "true"
    return spec


PID_MODES = ("", "host")
IPC_MODES = ("", "private", "host", SHAREABLE)
_PROC_NS = {"network": "net", "pid": "pid", "ipc": "ipc"}


def check_namespace_modes(pid_mode: str, ipc_mode: str) -> None:
    """Raise `InvalidArgument` (one line naming the flag) for a mode Carte does not run."""
    if pid_mode not in PID_MODES and not _container_ref(pid_mode):
        raise InvalidArgument(
            f'--pid "{pid_mode}" is not supported; use --pid host, --pid container:NAME, or '
            "leave it out for a pid namespace of the container's own"
        )
    if ipc_mode not in IPC_MODES and not _container_ref(ipc_mode):
        raise InvalidArgument(
            f'--ipc "{ipc_mode}" is not supported; use --ipc private (the default), '
            "shareable, container:NAME or host"
        )


def _container_ref(mode: str) -> str:
    kind, _, ref = mode.partition(":")
    return ref if kind == "container" else ""


def joined_namespaces(config: ContainerConfig) -> dict[str, str]:
    """The namespaces `config` joins, by OCI type, and the container each belongs to:
    ``--network container:REF`` ("network"), ``--pid container:REF`` ("pid"), ``--ipc
    container:REF`` ("ipc", with that container's /dev/shm: see `_ipc`)."""
    joins = {
        "network": _container_ref(config.network),
        "pid": _container_ref(config.pid_mode),
        "ipc": _container_ref(config.ipc_mode),
    }
    return {kind: ref for kind, ref in joins.items() if ref}


def join_namespaces(spec: Spec, pids: dict[str, int]) -> None:
    """Point each joined namespace type of `spec` at that of the process `pids[type]`."""
    for namespace in spec.linux.namespaces:
        if namespace.type in pids:
            namespace.path = f"/proc/{pids[namespace.type]}/ns/{_PROC_NS[namespace.type]}"


def _share_host_namespaces(spec: Spec, config: ContainerConfig, paths: ContainerPaths) -> None:
    """--pid host / --ipc host: leave that namespace out (the host's is kept); with the host's
    IPC namespace comes the host's /dev/shm, as with Docker. --ipc shareable: /dev/shm is the
    host-side tmpfs that joiners bind too (`_ipc`)."""
    check_namespace_modes(config.pid_mode, config.ipc_mode)
    shared = {"pid"} if config.pid_mode == "host" else set()
    if config.ipc_mode == "host":
        shared.add("ipc")
        bind_shm(spec, Path("/dev/shm"))
    elif config.ipc_mode == SHAREABLE:
        bind_shm(spec, shm_dir(paths.directory))
    spec.linux.namespaces = [ns for ns in spec.linux.namespaces if ns.type not in shared]


def join_network(spec: Spec, netns_path: str) -> None:
    """Make the container join the network namespace at `netns_path` (`--network
    container:NAME`, Compose's network_mode service:/container:) instead of making one."""
    for namespace in spec.linux.namespaces:
        if namespace.type == "network":
            namespace.path = netns_path


def share_network_files(joined: ContainerPaths, paths: ContainerPaths) -> None:
    """Give a container that joins another's network that one's /etc/hosts and resolv.conf."""
    paths.hosts_file.write_text(joined.hosts_file.read_text())
    paths.resolv_conf.write_text(joined.resolv_conf.read_text())


def extra_hosts_text(extra_hosts: list[str], gateway: str = "") -> str:
    """/etc/hosts lines for `NAME:IP` entries (`--add-host`, Compose's extra_hosts); the
    address `host-gateway` is the container's gateway (the host), skipped while unknown."""
    lines = []
    for entry in extra_hosts:
        name, _, address = entry.partition(":")
        if address == "host-gateway":
            address = gateway
        if name and address:
            lines.append(f"{address.strip('[]')}\t{name}\n")
    return "".join(lines)


def resolv_conf_text(servers: list[str], search: list[str]) -> str:
    """/etc/resolv.conf for `servers` (in order, repeats dropped) and search domains."""
    lines = [f"nameserver {server}\n" for server in dict.fromkeys(servers)]
    if search:
        lines.append("search " + " ".join(search) + "\n")
    return "".join(lines)


def _has_env(env: list[str], key: str) -> bool:
    return any(item.partition("=")[0] == key for item in env)


def _spec_mount(mount: MountSpec, volume_dirs: dict[str, Path]) -> Mount:
    if not mount.target.startswith("/"):
        raise InvalidArgument(
            f'mount target "{mount.target}" is not an absolute path; use e.g. -v data:/data'
        )
    if mount.type == "tmpfs":
        options = ["nosuid", "nodev", "noexec"]
        if mount.tmpfs_size:
            options.append(f"size={mount.tmpfs_size}")
        options.append(f"mode={mount.tmpfs_mode:o}" if mount.tmpfs_mode else "mode=1777")
        if mount.read_only:
            options.append("ro")
        return Mount(destination=mount.target, type="tmpfs", source="tmpfs", options=options)
    if mount.type == "volume":
        source = str(volume_dirs[mount.source])
    else:
        source = mount.source
    options = ["rbind", mount.propagation or "rprivate"]
    if mount.read_only:
        options.append("ro")
    return Mount(destination=mount.target, type="bind", source=source, options=options)


def _resources(resources: Resources, base: LinuxResources | None) -> LinuxResources:
    result = base or LinuxResources()
    memory: LinuxMemory | None = None
    if resources.memory:
        swap = resources.memory_swap
        memory = LinuxMemory(limit=resources.memory, swap=swap if swap else None)
    elif resources.memory_swap:
        raise InvalidArgument(
            "--memory-swap needs --memory; set both, e.g. -m 256m --memory-swap 512m"
        )
    if memory is not None and memory.swap not in (None, -1) and memory.swap < resources.memory:
        raise InvalidArgument(
            "--memory-swap must be at least --memory (it is memory plus swap); "
            "use -1 for unlimited swap"
        )
    cpu: LinuxCPU | None = None
    if resources.nano_cpus or resources.cpu_shares or resources.cpuset_cpus:
        cpu = LinuxCPU(
            shares=resources.cpu_shares or None,
            quota=(resources.nano_cpus * CPU_PERIOD // 1_000_000_000) or None,
            period=CPU_PERIOD if resources.nano_cpus else None,
            cpus=resources.cpuset_cpus or None,
        )
    pids = LinuxPids(limit=resources.pids_limit) if resources.pids_limit else None
    return msgspec.structs.replace(result, memory=memory, cpu=cpu, pids=pids)


def live_resources(resources: Resources) -> LinuxResources:
    """The cgroup update for `carte update`: only what `resources` sets."""
    return _resources(resources, LinuxResources())


def _rlimits(resources: Resources, base: list[POSIXRlimit]) -> list[POSIXRlimit]:
    limits = {limit.type: limit for limit in base}
    for ulimit in resources.ulimits:
        kind = "RLIMIT_" + ulimit.name.upper()
        limits[kind] = POSIXRlimit(type=kind, soft=ulimit.soft, hard=ulimit.hard)
    return list(limits.values())


def _security_options(options: list[str]) -> tuple[str | None, bool]:
    seccomp: str | None = None
    no_new_privileges = True
    for option in options:
        key, sep, value = option.partition("=" if "=" in option else ":")
        if key == "seccomp" and sep:
            seccomp = value
        elif key == "no-new-privileges":
            no_new_privileges = value.lower() not in ("false", "0") if sep else True
        elif key in ("apparmor", "label"):
            continue  # no AppArmor/SELinux on this runtime; accepted like Docker without them
        else:
            raise InvalidArgument(
                f'--security-opt "{option}" is not supported; use seccomp=unconfined, '
                "seccomp=PROFILE.json or no-new-privileges[=true|false]"
            )
    return seccomp, no_new_privileges


def _check_sysctls(config: ContainerConfig) -> None:
    """`InvalidArgument` for a sysctl the container's own namespaces do not isolate (it would
    change the host): checked here too, for the Docker API and plugins, not only the CLI."""
    for key in config.sysctls:
        shared = (
            not namespaced_sysctl(key)
            or (key.startswith("net.") and config.network == "host")
            or (key.startswith("kernel.") and config.ipc_mode == "host")
        )
        if shared:
            raise InvalidArgument(
                f'sysctl "{key}" would change the host (it is not namespaced, or the '
                "container shares that namespace with the host); only net.*, fs.mqueue.* and "
                "kernel.shm*/msg*/sem in the container's own namespaces are allowed"
            )


def resolve_user(user: str, lowerdirs: list[Path], group_add: list[str] | None = None) -> User:
    """`-u` (name, uid, name:group, uid:gid) -> uid, gid and supplementary groups, from the
    image's /etc/passwd and /etc/group, with `--group-add`'s on top. Raises `InvalidArgument`
    for an unknown name, or for a name when those files are not regular files (numeric ids
    then go without them)."""
    resolved = _resolve_user(user, lowerdirs)
    if group_add:
        resolved.additional_gids = _with_groups(resolved, group_add, lowerdirs)
    return resolved


def _resolve_user(user: str, lowerdirs: list[Path]) -> User:
    if not user:
        return User(uid=0, gid=0)
    name, _, group = user.partition(":")
    try:
        passwd = _read_image_file(lowerdirs, "etc/passwd")
        groups = _read_image_file(lowerdirs, "etc/group")
    except InvalidArgument:
        if not name.isdigit() or not (group or "0").isdigit():
            raise
        passwd = groups = []  # numeric ids need neither file
    uid: int | None = None
    gid: int | None = None
    username = ""
    for fields in passwd:
        if len(fields) >= 4 and (fields[0] == name or (name.isdigit() and fields[2] == name)):
            username, uid, gid = fields[0], int(fields[2]), int(fields[3])
            break
    if uid is None:
        if not name.isdigit():
            raise InvalidArgument(
                f'--user "{user}": no user "{name}" in the image\'s /etc/passwd; '
                "use a numeric uid or a user the image defines"
            )
        uid, gid = int(name), 0
    if group:
        gid = None
        for fields in groups:
            if len(fields) >= 3 and (fields[0] == group or fields[2] == group):
                gid = int(fields[2])
                break
        if gid is None:
            if not group.isdigit():
                raise InvalidArgument(
                    f'--user "{user}": no group "{group}" in the image\'s /etc/group; '
                    "use a numeric gid or a group the image defines"
                )
            gid = int(group)
    extra = []
    if username:
        for fields in groups:
            members = fields[3].split(",") if len(fields) >= 4 else []
            if username in members and fields[2].isdigit() and int(fields[2]) != gid:
                extra.append(int(fields[2]))
    return User(uid=uid, gid=gid or 0, additional_gids=extra)


_IMAGE_FILE_LIMIT = 4 * 1024 * 1024
"""The most of an image's /etc/passwd or /etc/group read (a real one is a few kB)."""


def _with_groups(user: User, wanted: list[str], lowerdirs: list[Path]) -> list[int]:
    """`--group-add` on top of the user's supplementary groups: gids, or group names from the
    image's /etc/group. Raises `InvalidArgument` naming a group the image lacks."""
    known = None
    gids = list(user.additional_gids)
    for group in wanted:
        if group.isdigit():
            gid = int(group)
        else:
            known = known if known is not None else _read_image_file(lowerdirs, "etc/group")
            found = [f[2] for f in known if len(f) >= 3 and f[0] == group and f[2].isdigit()]
            if not found:
                raise InvalidArgument(
                    f'--group-add "{group}": no group "{group}" in the image\'s /etc/group; '
                    "use a numeric gid or a group the image defines"
                )
            gid = int(found[0])
        if gid not in gids and gid != user.gid:
            gids.append(gid)
    return gids


def _read_image_file(lowerdirs: list[Path], relative: str) -> list[list[str]]:
    """Colon-separated lines of a file in the image (topmost layer wins); [] when absent,
    deleted (a whiteout) or a symlink (never followed out of the layer).

    Blocking work for a worker thread, but never blocking for long: the path is resolved
    inside each layer (`carte.runtime.paths`), opened O_NONBLOCK and read only when it is a
    regular file of at most `_IMAGE_FILE_LIMIT` bytes, so a FIFO, a device or a huge file in
    an image cannot hang the reader. Raises `InvalidArgument` naming the file otherwise."""
    for directory in lowerdirs:
        try:
            layer = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            text = _read_in_layer(layer, relative)
        finally:
            os.close(layer)
        if text is not None:
            return [line.split(":") for line in text.splitlines() if line and line[0] != "#"]
    return []


def _read_in_layer(layer: int, relative: str) -> str | None:
    """The file's text, "" for a whiteout or symlink (stop looking), None when absent."""
    parent_path, _, name = relative.rpartition("/")
    try:
        parent = open_in_root(layer, parent_path)
        try:
            kind = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(kind.st_mode) or (stat.S_ISCHR(kind.st_mode) and kind.st_rdev == 0):
                return ""
            if stat.S_ISDIR(kind.st_mode):
                return None
            if not stat.S_ISREG(kind.st_mode):
                raise InvalidArgument(
                    f"the image's /{relative} is not a regular file (a {_kind(kind.st_mode)}); "
                    "fix the image, or give --user as numeric UID:GID"
                )
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=parent)
        finally:
            os.close(parent)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise InvalidArgument(f"the image's /{relative} cannot be read: {error.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # swapped since the check
            raise InvalidArgument(f"the image's /{relative} is not a regular file; fix the image")
        data = file.read(_IMAGE_FILE_LIMIT + 1)
    if len(data) > _IMAGE_FILE_LIMIT:
        raise InvalidArgument(
            f"the image's /{relative} is over {_IMAGE_FILE_LIMIT // 1024 // 1024} MiB; "
            "fix the image, or give --user as numeric UID:GID"
        )
    return data.decode(errors="replace")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"
