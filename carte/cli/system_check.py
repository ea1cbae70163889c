"""`carte system check`: each kernel feature Carte needs, found or missing with the fix.

Runs in the client without a daemon: every check reads /proc, /sys or looks up a binary or
library, and never changes the host.
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from carte.api.host import read_cgroup_layout, v2_controllers


@dataclass(frozen=True)
class Check:
    """One feature: `ok`, what was seen (`detail`), and how to fix it when not ok."""

    feature: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


NAMESPACES = {
    "pid": "CONFIG_PID_NS",
    "mnt": "CONFIG_NAMESPACES",
    "uts": "CONFIG_UTS_NS",
    "ipc": "CONFIG_IPC_NS",
    "net": "CONFIG_NET_NS",
    "cgroup": "CONFIG_CGROUPS",
    "user": "CONFIG_USER_NS",
}

# Controllers the runtime uses for limits; devices and freezer exist only on v1.
CGROUP_CONTROLLERS_V1 = (
    "cpu",
    "cpuacct",
    "memory",
    "pids",
    "devices",
    "freezer",
    "cpuset",
    "blkio",
)
CGROUP_CONTROLLERS_V2 = ("cpu", "memory", "pids", "io", "cpuset")


def _namespace_checks() -> list[Check]:
    checks = []
    for name, option in NAMESPACES.items():
        present = Path(f"/proc/self/ns/{name}").exists()
        checks.append(
            Check(
                feature=f"namespace {name}",
                ok=present,
                detail="/proc/self/ns/" + name + (" present" if present else " missing"),
                fix=f"use a kernel built with {option}=y",
                required=name != "user",
            )
        )
    limit = _read_int(Path("/proc/sys/user/max_user_namespaces"))
    if limit is not None:
        checks.append(
            Check(
                feature="user namespaces allowed",
                ok=limit > 0,
                detail=f"user.max_user_namespaces={limit}",
                fix="sysctl -w user.max_user_namespaces=15000",
                required=False,
            )
        )
    return checks


def _overlay_check() -> Check:
    loaded = "overlay" in _read_text(Path("/proc/filesystems")).split()
    loadable = loaded or _kernel_has("CONFIG_OVERLAY_FS", "overlay")
    return Check(
        feature="overlayfs",
        ok=loadable,
        detail="in /proc/filesystems" if loaded else ("module available" if loadable else "absent"),
        fix="modprobe overlay (or use a kernel with CONFIG_OVERLAY_FS)",
    )


def _cgroup_checks() -> list[Check]:
    layout = read_cgroup_layout()
    checks = [
        Check(
            feature="cgroup layout",
            ok=layout.mode != "none",
            detail=layout.mode
            + "".join(f" {m.path}(v{m.version})" for m in layout.mounts if m.version == 2),
            fix="mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)",
        )
    ]
    v1_controllers = {c for m in layout.mounts if m.version == 1 for c in m.controllers}
    wanted: tuple[str, ...]
    have: set[str]
    if layout.mode in ("v1", "hybrid"):
        wanted, have = CGROUP_CONTROLLERS_V1, v1_controllers
        fix = "mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
    else:
        wanted, have = CGROUP_CONTROLLERS_V2, set(v2_controllers(layout))
        fix = "echo +{c} > /sys/fs/cgroup/cgroup.subtree_control (or boot with it enabled)"
    for controller in wanted:
        checks.append(
            Check(
                feature=f"cgroup controller {controller}",
                ok=controller in have,
                detail="available" if controller in have else "not mounted/enabled",
                fix=fix.format(c=controller),
                required=controller in ("cpu", "memory", "pids"),
            )
        )
    return checks


def _nftables_checks() -> list[Check]:
    binary = shutil.which("nft")
    kernel = _kernel_has("CONFIG_NF_TABLES", "nf_tables")
    return [
        Check(
            feature="nftables binary",
            ok=binary is not None,
            detail=binary or "nft not on PATH",
            fix="apt-get install nftables",
        ),
        Check(
            feature="nftables kernel",
            ok=kernel,
            detail="nf_tables available" if kernel else "nf_tables module absent",
            fix="modprobe nf_tables (or a kernel with CONFIG_NF_TABLES)",
        ),
    ]


def _seccomp_checks() -> list[Check]:
    status = _read_text(Path("/proc/self/status"))
    field = next((line for line in status.splitlines() if line.startswith("Seccomp:")), None)
    library = _find_libseccomp()
    return [
        Check(
            feature="seccomp kernel",
            ok=field is not None,
            detail=field.replace("\t", " ") if field else "no Seccomp field in /proc/self/status",
            fix="use a kernel built with CONFIG_SECCOMP_FILTER=y",
        ),
        Check(
            feature="libseccomp",
            ok=library is not None,
            detail=library or "libseccomp.so.2 not found",
            fix="apt-get install libseccomp2",
        ),
    ]


def _veth_check() -> Check:
    present = _kernel_has("CONFIG_VETH", "veth")
    return Check(
        feature="veth",
        ok=present,
        detail="veth driver available" if present else "veth module absent",
        fix="modprobe veth (or a kernel with CONFIG_VETH)",
    )


def _cluster_network_checks() -> list[Check]:
    """What overlay networks between nodes use: VXLAN always, WireGuard or IPsec ESP when the
    network is created with `--opt encrypted=true`. Optional: a single node needs none."""
    vxlan = _kernel_has("CONFIG_VXLAN", "vxlan")
    wireguard = _kernel_has("CONFIG_WIREGUARD", "wireguard")
    esp = _kernel_has("CONFIG_INET_ESP", "esp4") and _kernel_has("CONFIG_XFRM_USER", "xfrm_user")
    return [
        _optional(
            "vxlan (overlay networks)",
            vxlan,
            ("vxlan driver available", "vxlan module absent"),
            "modprobe vxlan (or a kernel with CONFIG_VXLAN)",
        ),
        _optional(
            "wireguard (encrypted overlay)",
            wireguard,
            ("wireguard available", "wireguard module absent"),
            "modprobe wireguard (Debian's stock kernel has it; or CONFIG_WIREGUARD)",
        ),
        _optional(
            "ipsec esp (encrypted overlay)",
            esp,
            ("esp4 and xfrm_user available", "esp4 or xfrm_user module absent"),
            "modprobe esp4 xfrm_user (or CONFIG_INET_ESP and CONFIG_XFRM_USER)",
        ),
    ]


def _optional(feature: str, ok: bool, details: tuple[str, str], fix: str) -> Check:
    """An optional feature's row: `details` says what was seen when present, when absent."""
    return Check(
        feature=feature, ok=ok, detail=details[0] if ok else details[1], fix=fix, required=False
    )


def run_checks() -> list[Check]:
    """Every check, in the order they are printed."""
    return [
        *_namespace_checks(),
        _overlay_check(),
        *_cgroup_checks(),
        *_nftables_checks(),
        *_seccomp_checks(),
        _veth_check(),
        *_cluster_network_checks(),
    ]


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _module_available(name: str) -> bool:
    """True when the module is loaded, built in, or installed for the running kernel."""
    if Path(f"/sys/module/{name}").exists():
        return True
    modules = Path("/lib/modules") / os.uname().release
    needle = f"/{name}.ko"
    for index in ("modules.builtin", "modules.dep"):
        for line in _read_text(modules / index).splitlines():
            path = line.split(":", 1)[0]
            if needle in path and path.rsplit("/", 1)[-1].startswith(f"{name}.ko"):
                return True
    return False


def _kernel_has(option: str, module: str) -> bool:
    """True when the module is available or the kernel's config builds the option in."""
    return _module_available(module) or _kernel_config().get(option) in ("y", "m")


def _kernel_config() -> dict[str, str]:
    """The running kernel's build options from /proc/config.gz or /boot (empty if neither)."""
    import gzip

    text = ""
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except (OSError, EOFError):
        text = _read_text(Path(f"/boot/config-{os.uname().release}"))
    options = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("CONFIG_"):
            options[name] = value
    return options


def _find_libseccomp() -> str | None:
    for directory in ("/lib", "/usr/lib", "/lib64", "/usr/lib64"):
        for found in Path(directory).glob("*/libseccomp.so.2"):
            return str(found)
        candidate = Path(directory) / "libseccomp.so.2"
        if candidate.exists():
            return str(candidate)
    return None
