"""The OCI runtime-spec `config.json` as msgspec Structs, plus Carte's default spec.

Field names on the wire are the spec's camelCase. Unknown fields are ignored (the runtime spec
asks runtimes to ignore what they do not know, and engines write extensions), but a field of the
wrong type is an `InvalidArgument` naming the file and the field path in one line.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from carte.api.errors import InvalidArgument
from carte.runtime.capabilities import LinuxCapabilities, default_capabilities
from carte.runtime.cgroups.devices import default_devices
from carte.runtime.cgroups.resources import LinuxResources
from carte.runtime.seccomp import LinuxSeccomp, default_profile

__all__ = [
    "INIT_ANNOTATION",
    "OCI_VERSION",
    "ConsoleSize",
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
]

OCI_VERSION = "1.0.2"
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


class Spec(_Model, omit_defaults=False):
    oci_version: str = OCI_VERSION
    root: Root = msgspec.field(default_factory=Root)
    mounts: list[Mount] = []
    process: Process | None = None
    hostname: str = ""
    domainname: str = ""
    linux: Linux = msgspec.field(default_factory=Linux)
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
