"""A container from the default spec is isolated at least as well as Docker's defaults."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from runtime_harness import Bundle, Runtime, host_mounts_mentioning

from carte.runtime.capabilities import CAPABILITY_NUMBERS, DEFAULT_CAPABILITIES


def _status_mask(output: str, key: str) -> int:
    for line in output.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"{key} not in output: {output!r}")


def test_pid_one_sees_only_its_own_processes(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    result = runtime.run(make_bundle(shell="echo $$ /proc/[0-9]*"))
    assert result.returncode == 0, result.stderr
    pid, *processes = result.stdout.split()
    assert pid == "1"
    assert processes == ["/proc/1"]


def test_own_hostname(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    bundle = make_bundle("hostname")
    bundle.config["hostname"] = "isolated-box"
    result = runtime.run(bundle)
    assert result.stdout.strip() == "isolated-box", result.stderr
    assert os.uname().nodename != "isolated-box"


def test_capabilities_at_most_the_default_set(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    result = runtime.run(make_bundle("cat", "/proc/self/status"))
    assert result.returncode == 0, result.stderr
    allowed = sum(1 << CAPABILITY_NUMBERS[name] for name in DEFAULT_CAPABILITIES)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        mask = _status_mask(result.stdout, key)
        assert mask & ~allowed == 0, f"{key} {mask:#x} holds more than the default set"
    assert bin(_status_mask(result.stdout, "CapBnd")).count("1") <= 14
    assert _status_mask(result.stdout, "CapAmb") == 0


def test_no_new_privileges_and_seccomp_filter(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    result = runtime.run(make_bundle("cat", "/proc/self/status"))
    lines = dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)
    assert lines["NoNewPrivs"].strip() == "1"
    assert lines["Seccomp"].strip() == "2"


def test_masked_proc_paths_show_nothing(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    script = (
        "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do "
        '[ -e $f ] && echo "$f $(head -c 64 $f | wc -c)"; done; '
        "echo acpi $(ls -A /proc/acpi | wc -l); echo firmware $(ls -A /sys/firmware | wc -l)"
    )
    result = runtime.run(make_bundle(shell=script))
    assert result.returncode == 0, result.stderr
    sizes = dict(line.split() for line in result.stdout.splitlines())
    assert sizes.pop("acpi") == "0"
    assert sizes.pop("firmware") == "0"
    assert sizes and all(size == "0" for size in sizes.values()), sizes


def test_proc_sys_sysrq_and_sys_are_read_only(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    script = (
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable; "
        "echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; "
        "touch /sys/kernel/probe 2>/dev/null && echo sysfs-writable; "
        "grep -E ' /sys | /proc/sys ' /proc/self/mountinfo"
    )
    result = runtime.run(make_bundle(shell=script))
    assert "writable" not in result.stdout
    mounts = result.stdout.splitlines()
    assert len(mounts) == 2
    assert all(" ro," in line or " ro " in line for line in mounts), mounts


def test_mount_syscall_fails(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    result = runtime.run(make_bundle(shell="mkdir -p /mnt && mount -t tmpfs none /mnt; echo $?"))
    assert result.stdout.strip() != "0"
    assert "denied" in result.stderr or "not permitted" in result.stderr


def test_raw_disk_unreadable_even_with_its_node(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    """A node of the host's disk planted in the image (as if created with mknod) cannot be
    read: the device cgroup refuses it even with CAP_MKNOD, and mknod itself fails too."""
    disk = os.stat(_root_disk())
    bundle = make_bundle(
        shell="dd if=/planted of=/dev/null bs=512 count=1 && echo read-planted; "
        f"mknod /tmp/disk b {os.major(disk.st_rdev)} {os.minor(disk.st_rdev)} && "
        "dd if=/tmp/disk of=/dev/null bs=512 count=1 && echo read-made; true"
    )
    os.mknod(bundle.rootfs / "planted", stat.S_IFBLK | 0o600, disk.st_rdev)
    caps = bundle.config["process"]["capabilities"]
    for key in ("bounding", "effective", "permitted"):
        caps[key].append("CAP_MKNOD")
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    assert "read-" not in result.stdout
    assert "Operation not permitted" in result.stderr


def _root_disk() -> str:
    device = os.stat("/").st_dev
    if os.path.exists("/dev/vda") and os.stat("/dev/vda").st_rdev == device:
        return "/dev/vda"
    for entry in Path("/dev").iterdir():
        info = entry.lstat()
        if stat.S_ISBLK(info.st_mode) and info.st_rdev == device:
            return str(entry)
    raise AssertionError("cannot find the host's root block device")


def test_overlay_root_hides_host_and_keeps_lower_clean(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = make_bundle(
        shell="grep ' / ' /proc/self/mountinfo; ls /work /etc/debian_version 2>&1; "
        "echo written > /newfile"
    )
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    bundle.config["root"]["path"] = str(merged)
    bundle.config["mounts"].insert(
        0,
        {
            "destination": "/",
            "type": "overlay",
            "source": "overlay",
            "options": [f"lowerdir={bundle.rootfs}", f"upperdir={upper}", f"workdir={work}"],
        },
    )
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    assert " - overlay " in result.stdout.splitlines()[0]
    assert "No such file or directory" in result.stdout
    assert (upper / "newfile").read_text() == "written\n"
    assert not (bundle.rootfs / "newfile").exists()
    assert host_mounts_mentioning(str(merged)) == []


def test_readonly_root(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    bundle = make_bundle(shell="touch /rootfile && echo wrote; touch /tmp/x 2>&1")
    bundle.config["root"]["readonly"] = True
    result = runtime.run(bundle)
    assert "wrote" not in result.stdout
    assert "Read-only file system" in result.stderr + result.stdout
    assert not (bundle.rootfs / "rootfile").exists()
