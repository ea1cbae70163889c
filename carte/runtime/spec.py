"""The OCI runtime-spec `config.json` as msgspec Structs, plus Carte's default spec.

Field names on the wire are the spec's camelCase. Unknown fields are ignored (the runtime spec
asks runtimes to ignore what they do not know, and engines write extensions), but a field of the
wrong type is an `InvalidArgument` naming the file and the field path in one line.
"""

from __future__ import annotations

import re
import resource
from collections.abc import Mapping
from pathlib import Path

import msgspec

from carte.api.errors import InvalidArgument
from carte.runtime.capabilities import CAPABILITY_NUMBERS, LinuxCapabilities, default_capabilities
from carte.runtime.cgroups.devices import default_devices
from carte.runtime.cgroups.resources import LinuxResources
from carte.runtime.seccomp import LinuxSeccomp, default_profile

__all__ = [
    "INIT_ANNOTATION",
    "OCI_VERSION",
    "ConsoleSize",
    "Hook",
    "Hooks",
    "Linux",
    "LinuxDevice",
    "LinuxIDMapping",
    "LinuxNamespace",
    "Mount",
    "POSIXRlimit",
    "Process",
    "Root",
    "Spec",
    "User",
    "decode_spec",
    "default_spec",
    "encode_spec",
    "load_spec",
    "validate_spec",
]

OCI_VERSION = "1.1.0"
# `docker run --init`: the container's pid 1 stays Carte's minimal init (carte.runtime.init).
INIT_ANNOTATION = "run.carte.init"


class _Model(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Base for spec objects: camelCase on the wire, defaults left out when encoding."""


class Root(_Model, omit_defaults=False):
    path: str = "rootfs"
    readonly: bool = False


class Mount(_Model):
    """A mount. A mount of type "overlay" with destination "/" builds the root itself: it is
    mounted on `root.path` (lowerdir/upperdir/workdir in `options`) inside the container's mount
    namespace, so it disappears with the container and never shows on the host."""

    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] = []


def overlay_root(lowerdirs: list[str], upper: str, work: str) -> Mount:
    """The mount that builds the root from image layers (`lowerdirs`, topmost first) and the
    container's own `upper` and `work` directories; it goes first in `mounts`."""
    return Mount(
        destination="/",
        type="overlay",
        source="overlay",
        options=["lowerdir=" + ":".join(lowerdirs), f"upperdir={upper}", f"workdir={work}"],
    )


class User(_Model):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] = []
    username: str = ""


class ConsoleSize(_Model):
    height: int = 0
    width: int = 0


class POSIXRlimit(_Model):
    type: str
    hard: int
    soft: int


class Hook(_Model):
    """A lifecycle hook: `path` (absolute) run with `args` and exactly `env`, the container's
    state JSON on its stdin, killed after `timeout` seconds when one is given."""

    path: str
    args: list[str] = []
    env: list[str] = []
    timeout: int | None = None


class Hooks(_Model):
    """The spec's hooks, each list run in order at its point of the lifecycle."""

    prestart: list[Hook] = []
    create_runtime: list[Hook] = []
    create_container: list[Hook] = []
    start_container: list[Hook] = []
    poststart: list[Hook] = []
    poststop: list[Hook] = []


class Process(_Model, omit_defaults=False):
    """The container process; encoded in full because other runtimes (runc) require `cwd`."""

    terminal: bool = False
    console_size: ConsoleSize | None = None
    user: User = msgspec.field(default_factory=User)
    args: list[str] = []
    env: list[str] = []
    cwd: str = "/"
    capabilities: LinuxCapabilities | None = None
    rlimits: list[POSIXRlimit] = []
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    apparmor_profile: str = ""
    selinux_label: str = ""
    # Defined by the spec, not implemented by Carte: refused by `validate_spec` when present.
    io_priority: dict[str, object] | None = None
    scheduler: dict[str, object] | None = None
    exec_cpu_affinity: dict[str, object] | None = msgspec.field(
        default=None, name="execCPUAffinity"
    )


class LinuxNamespace(_Model):
    """A namespace to create (no `path`) or to join (`path` to an nsfs file)."""

    type: str
    path: str = ""


class LinuxIDMapping(_Model):
    container_id: int = msgspec.field(name="containerID")
    host_id: int = msgspec.field(name="hostID")
    size: int


class LinuxDevice(_Model):
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class Linux(_Model):
    namespaces: list[LinuxNamespace] = []
    uid_mappings: list[LinuxIDMapping] = []
    gid_mappings: list[LinuxIDMapping] = []
    resources: LinuxResources | None = None
    cgroups_path: str = ""
    masked_paths: list[str] = []
    readonly_paths: list[str] = []
    seccomp: LinuxSeccomp | None = None
    devices: list[LinuxDevice] = []
    sysctl: dict[str, str] = {}
    rootfs_propagation: str = ""
    mount_label: str = ""
    # Defined by the spec, not implemented by Carte: refused by `validate_spec` when present.
    personality: dict[str, object] | None = None
    intel_rdt: dict[str, object] | None = msgspec.field(default=None, name="intelRdt")
    time_offsets: dict[str, object] | None = None
    memory_policy: dict[str, object] | None = None
    net_devices: dict[str, object] | None = None


class Spec(_Model, omit_defaults=False):
    oci_version: str = OCI_VERSION
    root: Root = msgspec.field(default_factory=Root)
    mounts: list[Mount] = []
    process: Process | None = None
    hostname: str = ""
    domainname: str = ""
    linux: Linux = msgspec.field(default_factory=Linux)
    hooks: Hooks | None = None
    annotations: dict[str, str] = {}


_decoder = msgspec.json.Decoder(Spec)
_encoder = msgspec.json.Encoder()


def decode_spec(raw: bytes, *, source: str = "config.json") -> Spec:
    """Decode a config.json document. Raises `InvalidArgument` naming `source` and the field."""
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as error:
        text = str(error).replace("`", "")
        raise InvalidArgument(f"{source}: {text}; fix that field and retry") from None
    except msgspec.DecodeError as error:
        raise InvalidArgument(f"{source}: not valid JSON ({error}); fix the file") from None


def load_spec(path: Path) -> Spec:
    """Read and decode the config.json at `path`.

    Raises `InvalidArgument` (one line: file, field, problem) for a missing or malformed file.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(
            f"{path}: no such file; a bundle needs a config.json (write one with "
            "`carte runtime spec > config.json`)"
        ) from None
    except OSError as error:
        raise InvalidArgument(f"{path}: cannot read it: {error.strerror}") from None
    return decode_spec(raw, source=str(path))


def encode_spec(spec: Spec) -> bytes:
    """The spec as compact JSON."""
    return _encoder.encode(spec)


_OCI_VERSION = re.compile(r"^1\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?$")
_RLIMIT_TYPES = frozenset(name for name in dir(resource) if name.startswith("RLIMIT_"))
_UINT64_MAX = 2**64 - 1
_PROPAGATIONS = frozenset(
    ("", "shared", "rshared", "slave", "rslave", "private", "rprivate", "unbindable", "runbindable")
)
_NAMESPACE_TYPES = frozenset(("pid", "network", "mount", "ipc", "uts", "user", "cgroup"))
_DEVICE_TYPES = frozenset("cbup")
_HOOK_KINDS = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)


def validate_spec(spec: Spec, *, source: str = "config.json") -> None:
    """Refuse a spec with an invalid value, or one Carte cannot honour, before anything is made.

    Raises `InvalidArgument`: one line naming `source`, the field and what to do. The runtime
    spec asks for exactly this ("Runtimes MUST generate an error when invalid or unsupported
    values are encountered"); unknown fields stay ignored, as it also asks.
    """
    problem = _first_problem(spec)
    if problem is not None:
        raise InvalidArgument(f"{source}: {problem}")


def _first_problem(spec: Spec) -> str | None:
    for check in (_version_problem, _process_problem, _linux_problem, _hooks_problem):
        problem = check(spec)
        if problem is not None:
            return problem
    return None


def _version_problem(spec: Spec) -> str | None:
    if not _OCI_VERSION.match(spec.oci_version):
        return (
            f'ociVersion "{spec.oci_version}" is not a 1.x SemVer version; Carte implements '
            "runtime-spec 1.x (write e.g. 1.1.0)"
        )
    if not spec.root.path:
        return 'root.path is empty; give the root filesystem directory (e.g. "rootfs")'
    for index, entry in enumerate(spec.mounts):
        if not entry.destination.startswith("/"):
            return (
                f'mounts[{index}].destination "{entry.destination}" is not an absolute path; '
                "start it with /"
            )
    return None


def _process_problem(spec: Spec) -> str | None:
    process = spec.process
    if process is None:
        return "process is missing; give process.args and process.cwd"
    if not process.args:
        return "process.args is empty; give the command to run"
    if not process.cwd.startswith("/"):
        return f'process.cwd "{process.cwd}" is not an absolute path; start it with /'
    for index, item in enumerate(process.env):
        if "=" not in item or item.startswith("="):
            return f'process.env[{index}] "{item}" is not NAME=value'
    seen: set[str] = set()
    for index, limit in enumerate(process.rlimits):
        field = f"process.rlimits[{index}]"
        if limit.type not in _RLIMIT_TYPES:
            return f'{field}.type "{limit.type}" is not a resource of getrlimit(2) (RLIMIT_...)'
        if limit.type in seen:
            return f"{field}: {limit.type} is given twice; keep one entry per type"
        seen.add(limit.type)
        for name, value in (("soft", limit.soft), ("hard", limit.hard)):
            if not 0 <= value <= _UINT64_MAX:
                return f"{field}.{name} {value} is out of range; give 0 to 2^64-1"
        if limit.soft > limit.hard:
            return (
                f"{field}: soft {limit.soft} is above hard {limit.hard}; the soft limit must "
                "not exceed the hard one"
            )
    if process.capabilities is not None:
        caps = process.capabilities
        for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            for name in getattr(caps, kind):
                if name.upper() not in CAPABILITY_NUMBERS:
                    return (
                        f'process.capabilities.{kind}: unknown capability "{name}"; use names '
                        "from capabilities(7) such as CAP_CHOWN"
                    )
    if process.oom_score_adj is not None and not -1000 <= process.oom_score_adj <= 1000:
        return f"process.oomScoreAdj {process.oom_score_adj} is out of range; give -1000 to 1000"
    umask = process.user.umask
    if umask is not None and not 0 <= umask <= 0o777:
        return f"process.user.umask {umask} is out of range; give 0 to 511 (0o777)"
    unsupported = {
        "process.apparmorProfile": process.apparmor_profile,
        "process.selinuxLabel": process.selinux_label,
        "process.ioPriority": process.io_priority,
        "process.scheduler": process.scheduler,
        "process.execCPUAffinity": process.exec_cpu_affinity,
    }
    return _unsupported_problem(unsupported)


def _unsupported_problem(fields: Mapping[str, object]) -> str | None:
    for field, value in fields.items():
        if value:
            return f"{field} is not supported by Carte; remove it from the spec"
    return None


def _linux_problem(spec: Spec) -> str | None:
    linux = spec.linux
    kinds: set[str] = set()
    for index, namespace in enumerate(linux.namespaces):
        if namespace.type not in _NAMESPACE_TYPES:
            return (
                f'linux.namespaces[{index}].type "{namespace.type}" is not supported; use one '
                "of " + ", ".join(sorted(_NAMESPACE_TYPES))
            )
        if namespace.type in kinds:
            return f'linux.namespaces: "{namespace.type}" is given twice; keep one entry'
        kinds.add(namespace.type)
    if linux.rootfs_propagation not in _PROPAGATIONS:
        return (
            f'linux.rootfsPropagation "{linux.rootfs_propagation}" is not a propagation type; '
            "use shared, slave, private or unbindable (or their r-prefixed forms)"
        )
    if spec.hostname and "uts" not in kinds:
        return 'hostname is set but linux.namespaces has no "uts" namespace; add one or drop it'
    for index, device in enumerate(linux.devices):
        if device.type not in _DEVICE_TYPES:
            return f'linux.devices[{index}].type "{device.type}" is not one of c, b, u, p'
    if "mount" not in kinds:
        needing_mounts = {
            "mounts": spec.mounts,
            "linux.maskedPaths": linux.masked_paths,
            "linux.readonlyPaths": linux.readonly_paths,
            "linux.rootfsPropagation": linux.rootfs_propagation,
            "linux.devices": linux.devices,
            "linux.sysctl": linux.sysctl,
            "root.readonly": spec.root.readonly,
        }
        for field, value in needing_mounts.items():
            if value:
                return (
                    f'{field} needs a mount namespace, and linux.namespaces has no "mount": '
                    "without one the container shares the host's mount table, which Carte "
                    "does not change; add a mount namespace or remove that field"
                )
    unsupported = {
        "linux.mountLabel": linux.mount_label,
        "linux.personality": linux.personality,
        "linux.intelRdt": linux.intel_rdt,
        "linux.timeOffsets": linux.time_offsets,
        "linux.memoryPolicy": linux.memory_policy,
        "linux.netDevices": linux.net_devices,
    }
    return _unsupported_problem(unsupported)


def _hooks_problem(spec: Spec) -> str | None:
    if spec.hooks is None:
        return None
    for kind in _HOOK_KINDS:
        attribute = re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), kind)
        for index, hook in enumerate(getattr(spec.hooks, attribute)):
            field = f"hooks.{kind}[{index}]"
            if not hook.path.startswith("/"):
                return f'{field}.path "{hook.path}" is not an absolute path; the spec requires one'
            if hook.timeout is not None and hook.timeout <= 0:
                return f"{field}.timeout {hook.timeout} must be greater than zero (seconds)"
    return None


MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_mounts() -> list[Mount]:
    """The mounts every container gets (the same set Docker and runc use)."""
    hardened = ["nosuid", "noexec", "nodev"]
    return [
        Mount(destination="/proc", type="proc", source="proc", options=hardened),
        Mount(
            destination="/dev",
            type="tmpfs",
            source="tmpfs",
            options=["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        Mount(
            destination="/dev/pts",
            type="devpts",
            source="devpts",
            options=["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        Mount(
            destination="/dev/shm",
            type="tmpfs",
            source="shm",
            options=[*hardened, "mode=1777", "size=65536k"],
        ),
        Mount(destination="/dev/mqueue", type="mqueue", source="mqueue", options=hardened),
        Mount(destination="/sys", type="sysfs", source="sysfs", options=[*hardened, "ro"]),
        Mount(
            destination="/sys/fs/cgroup",
            type="cgroup",
            source="cgroup",
            options=[*hardened, "relatime", "ro"],
        ),
    ]


def default_spec(
    *,
    args: list[str] | None = None,
    rootfs: str = "rootfs",
    terminal: bool = False,
    hostname: str = "carte",
) -> Spec:
    """The default config.json: Docker-equivalent isolation (`carte runtime spec` prints it and
    the engine starts from it). pid, network, ipc, uts, mount and cgroup namespaces; Podman's 11
    default capabilities; no new privileges; masked and read-only /proc paths; the default
    seccomp profile when the seccomp module provides one."""
    return Spec(
        root=Root(path=rootfs),
        mounts=default_mounts(),
        process=Process(
            terminal=terminal,
            args=args if args is not None else ["sh"],
            env=[DEFAULT_PATH, "TERM=xterm"],
            cwd="/",
            capabilities=default_capabilities(),
            rlimits=[POSIXRlimit(type="RLIMIT_NOFILE", hard=1024, soft=1024)],
            no_new_privileges=True,
        ),
        hostname=hostname,
        linux=Linux(
            namespaces=[
                LinuxNamespace(type=kind)
                for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup")
            ],
            resources=LinuxResources(devices=default_devices()),
            masked_paths=list(MASKED_PATHS),
            readonly_paths=list(READONLY_PATHS),
            seccomp=default_profile(),
        ),
    )
