"""The shim factory ends with its daemon and never shows inside a container (issue 11).

One was seen in a container's cgroup ignoring SIGTERM after a bench daemon died: a created
container's parked init, forked from the factory, read as `carte shim factory` (and, as a
pid namespace's init, ignores SIGTERM). Now a forked shim, and the init it parks, read as
`carte-shim -id ID`; and the factory exits once its daemon is gone even when something
else still holds its stdin pipe (it watches its parent and its socket too).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from support.containers import ok
from support.daemon import DaemonFactory
from support.leftovers import cgroup_dirs, remove_leftovers
from support.module_daemon import alive

from carte.runtime.shim.client import factory_command


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def factories(run_root: Path) -> list[int]:
    """Pids whose command line is a shim factory serving under `run_root`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"factory" in argv and any(str(run_root).encode() in arg for arg in argv):
            found.append(int(entry.name))
    return found


def test_a_parked_container_init_is_no_factory_and_the_factory_ends_with_its_daemon(
    daemons: DaemonFactory, busybox_tar: Path
) -> None:
    carte = daemons()
    try:
        ok(carte.client("import", str(busybox_tar), "busybox"))
        made = ok(carte.client("create", "--name", "parked", "busybox", "sleep", "60")).strip()
        parked = {
            int(pid)
            for cgroup in cgroup_dirs(made)
            for pid in (cgroup / "cgroup.procs").read_text().split()
        }
        assert parked, "the created container has no parked init"
        for pid in parked:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert title.startswith(f"carte-shim -id {made}"), title
        [factory] = factories(carte.run_root)  # the factory itself, outside every container
        assert made not in Path(f"/proc/{factory}/cgroup").read_text()
        assert carte.process is not None
        carte.process.kill()
        carte.process.wait()
        assert gone(factory, 5), "the shim factory outlived its daemon"
        carte.start()
        ok(carte.client("rm", "-f", "parked"))
    finally:
        if alive(carte):
            carte.stop()
        remove_leftovers(carte)  # a failed check leaves no shim or parked init behind


def test_the_factory_exits_when_its_parent_or_its_socket_is_gone(tmp_path: Path) -> None:
    held, keep = os.pipe()  # the write end stays open here: stdin never ends
    try:
        # started by a shell that exits at once: the factory's parent is gone
        socket_path = tmp_path / "orphan.sock"
        started = subprocess.run(
            ["sh", "-c", '"$@" <&0 >/dev/null 2>&1 & echo $!', "sh", *factory_command(socket_path)],
            stdin=held,
            capture_output=True,
            text=True,
            check=True,
        )
        orphan = int(started.stdout)
        try:
            assert gone(orphan, 8), "the factory outlived its parent"
        finally:
            if not gone(orphan, 0):
                os.kill(orphan, 9)
        # its parent stays, its socket is removed
        socket_path = tmp_path / "removed.sock"
        factory = subprocess.Popen(factory_command(socket_path), stdin=held, stdout=subprocess.PIPE)
        try:
            assert factory.stdout is not None and factory.stdout.readline() == b"ready\n"
            socket_path.unlink()
            factory.wait(5)
        finally:
            factory.kill()
            factory.wait()
            factory.stdout.close()
    finally:
        os.close(held)
        os.close(keep)
