"""Flags mean what they say (issue 11, item 12): no argparse abbreviation turns `--pid host`
into `--pids-limit host`; `--pid host` and `--ipc host|private` give the container the host's
(or its own) namespace, seen from inside; what Carte cannot do yet is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

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
        assert done.returncode == 125 and "unknown flag" in done.stderr, done.stderr
    assert ok(carte.client("ps", "-aq")) == ""
    assert carte.client("--form", "json", "ps").returncode != 0


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--pid", "container:"), ("--pid", "bogus"), ("--ipc", "container:"), ("--ipc", "none!")],
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
    config = {"image": "busybox", "cmd": ["true"], "ipc_mode": "shared"}
    reply = carte.command_("CreateContainer", config=config)
    assert reply.status == 400, reply.json()
    assert reply.json()["error"]["message"].startswith('--ipc "shared" is not supported')
    assert ok(carte.client("ps", "-aq")) == ""


# -- item 7: nothing under the root is readable, or executable with privilege, by other users --

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

PROBE = r"""
import os, sys
for path in sys.stdin.read().split("\0"):
    if not path:
        continue
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except OSError:
        continue
    print(path)
"""


def readable_by_nobody(root: str) -> list[str]:
    paths = [root]
    for directory, subdirs, files in os.walk(root):
        paths += [os.path.join(directory, name) for name in (*subdirs, *files)]
    done = subprocess.run(
        [*NOBODY, "/usr/bin/python3", "-c", PROBE],
        input="\0".join(paths),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_another_user_reads_nothing_and_gains_nothing_from_a_volume(
    carte: Daemon, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / ".env").write_text("DB_PASSWORD=hunter2\n")
    (context / "Dockerfile").write_text("FROM busybox\nCOPY .env /app/.env\n")
    ok(carte.client("build", "-t", "secret-app", str(context), timeout=120))
    ok(carte.client("volume", "create", "data"))
    script = "cp /host-id /data/id && chown 0:0 /data/id && chmod 4755 /data/id; echo $SECRET"
    assert "hunter2" in ok(
        carte.client(
            "run", "--name", "writer", "-e", "SECRET=hunter2", "-v", "data:/data",
            "-v", "/usr/bin/id:/host-id:ro", "busybox", "sh", "-c", script,
        )
    )  # fmt: skip
    root = str(carte.root)
    assert os.stat(root).st_mode & 0o777 == 0o711
    assert os.stat(os.path.join(root, "volumes")).st_mode & 0o777 == 0o701
    for name in ("state.db", "state.db-wal"):
        path = os.path.join(root, name)
        if os.path.exists(path):
            assert os.stat(path).st_mode & 0o777 == 0o600, name

    assert readable_by_nobody(root) == []

    volume = json.loads(ok(carte.client("--format", "json", "volume", "inspect", "data")))
    setuid_copy = os.path.join(volume[0]["mountpoint"], "id")
    assert os.stat(setuid_copy).st_mode & 0o4000  # what the container wrote is there
    options = subprocess.run(
        ["findmnt", "-n", "-o", "OPTIONS", "-T", setuid_copy],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "nosuid" in options and "nodev" in options, options
    escalate = subprocess.run([*NOBODY, setuid_copy, "-u"], capture_output=True, text=True)
    assert escalate.stdout.strip() != "0", "a setuid binary in a volume gave root"


def ns_of(carte: Daemon, container: str, kind: str) -> str:
    return ok(carte.client("exec", container, "readlink", f"/proc/self/ns/{kind}")).strip()


def test_pid_container_joins_and_rejoins_after_restarts(carte: Daemon) -> None:
    """--pid container:NAME (and --network container:NAME) join the target's namespace as it
    is at each start, never a path recorded at create time (its pid may belong to another
    process by then)."""
    ok(carte.client("run", "-d", "--name", "target", "busybox", "sleep", "300"))
    ok(
        carte.client(
            "run", "-d", "--name", "joiner", "--pid", "container:target",
            "--network", "container:target", "busybox", "sleep", "301",
        )
    )  # fmt: skip
    for _ in range(2):
        assert ns_of(carte, "joiner", "pid") == ns_of(carte, "target", "pid")
        assert ns_of(carte, "joiner", "net") == ns_of(carte, "target", "net")
        assert "sleep 300" in ok(carte.client("exec", "joiner", "ps", "-o", "args"))
        ok(carte.client("restart", "-t", "0", "target"))
        ok(carte.client("restart", "-t", "0", "joiner"))
    ok(carte.client("stop", "-t", "0", "target"))
    refused = carte.client("start", "joiner")
    assert refused.returncode != 0 and "target" in refused.stderr, refused.stderr
