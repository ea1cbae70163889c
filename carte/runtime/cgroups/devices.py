"""Device-cgroup rules: Docker's default allow-list and their v1 text form.

Everything is denied first; then a container may create any device node (mknod is harmless on
its own) but open only the standard pseudo-devices: null, zero, full, random, urandom, the
terminals (tty, console, ptmx) and its pseudo-terminal slaves. A raw disk node made with mknod
therefore still fails to open with EPERM, as under Docker and runc.
"""

from __future__ import annotations

from carte.runtime.cgroups.resources import LinuxDeviceCgroup

_PTS_MAJOR = 136


def default_devices() -> list[LinuxDeviceCgroup]:
    """Docker's default device rules, deny-all first; a fresh list each call."""

    def char(major: int, minor: int | None, access: str = "rwm") -> LinuxDeviceCgroup:
        return LinuxDeviceCgroup(allow=True, type="c", major=major, minor=minor, access=access)

    return [
        LinuxDeviceCgroup(allow=False, access="rwm"),
        LinuxDeviceCgroup(allow=True, type="c", access="m"),
        LinuxDeviceCgroup(allow=True, type="b", access="m"),
        char(1, 3),  # null
        char(1, 5),  # zero
        char(1, 7),  # full
        char(1, 8),  # random
        char(1, 9),  # urandom
        char(5, 0),  # tty
        char(5, 1),  # console
        char(5, 2),  # ptmx
        char(_PTS_MAJOR, None),  # pts/*
    ]


def v1_rule(device: LinuxDeviceCgroup) -> str:
    """The rule as devices.allow/devices.deny take it, e.g. "c 1:3 rwm" or "a *:* rwm"."""
    kind = device.type or "a"
    major = "*" if device.major is None or device.major < 0 else str(device.major)
    minor = "*" if device.minor is None or device.minor < 0 else str(device.minor)
    return f"{kind} {major}:{minor} {device.access or 'rwm'}"
