"""Flags mean what they say (issue 11, item 12): no argparse abbreviation turns `--pid host`
into `--pids-limit host`; `--pid host` and `--ipc host|private` give the container the host's
(or its own) namespace, seen from inside; what Carte cannot do yet is refused in one line."""

from __future__ import annotations

import os
import subprocess

import pytest
from support.containers import ok
from support.daemon import Daemon


def inside(carte: Daemon, *flags: str, command: str) -> str:
    return ok(carte.client("run", "--rm", *flags, "busybox", "sh", "-c", command)).strip()


def test_pid_host_and_ipc_host_share_the_hosts_namespaces(carte: Daemon) -> None:
    host_pid, host_ipc = os.readlink("/proc/self/ns/pid"), os.readlink("/proc/self/ns/ipc")
    with open("/proc/1/comm") as comm:
        host_init = comm.read().strip()
    probe = "cat /proc/1/comm; readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc"

    assert inside(carte, "--pid", "host", "--ipc", "host", command=probe).splitlines() == [
        host_init,
        host_pid,
        host_ipc,
    ]
    own_init, own_pid, own_ipc = inside(carte, "--ipc", "private", command=probe).splitlines()
    assert own_pid != host_pid and own_ipc != host_ipc and own_init == "sh"


def test_ipc_host_sees_the_hosts_sysv_segments(carte: Daemon) -> None:
    made = subprocess.run(["ipcmk", "-M", "4096"], capture_output=True, text=True, check=True)
    segment = made.stdout.split()[-1]
    try:
        listing = "awk '{print $2}' /proc/sysvipc/shm"  # busybox has no ipcs
        assert segment in inside(carte, "--ipc", "host", command=listing).split()
        assert segment not in inside(carte, command=listing).split()
    finally:
        subprocess.run(["ipcrm", "-m", segment], check=False)


def test_no_flag_is_abbreviated(carte: Daemon) -> None:
    for flags in (["--pids", "host"], ["--pid-l", "10"], ["--nam", "x"]):
        done = carte.client("create", *flags, "busybox", "true")
        assert done.returncode != 0, flags
        assert "unrecognized arguments" in done.stderr, done.stderr
    assert ok(carte.client("ps", "-aq")) == ""
    assert carte.client("--form", "json", "ps").returncode != 0


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--pid", "container:web"), ("--pid", "bogus"), ("--ipc", "shareable"), ("--ipc", "none!")],
)
def test_unsupported_namespace_modes_are_refused_in_one_line(
    carte: Daemon, flag: str, value: str
) -> None:
    done = carte.client("run", "--rm", flag, value, "busybox", "true")
    assert done.returncode == 125, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and value in lines[0], done.stderr
    assert ok(carte.client("ps", "-aq")) == ""


def test_the_api_refuses_them_too(carte: Daemon) -> None:
    config = {"image": "busybox", "cmd": ["true"], "pid_mode": "container:web"}
    reply = carte.command_("CreateContainer", config=config)
    assert reply.status == 400, reply.json()
    assert reply.json()["error"]["message"].startswith('--pid "container:web" is not supported')
    assert ok(carte.client("ps", "-aq")) == ""
