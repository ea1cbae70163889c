"""Image files are read without blocking (issue 11 item 2): an image whose /etc/passwd is a
FIFO, and a container that replaced its own /etc/passwd by one, make `create --user` and
`exec --user` fail at once in one line naming the file; the daemon keeps answering and no
worker thread stays blocked behind."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon


def threads(carte: Daemon) -> int:
    assert carte.process is not None
    for line in Path(f"/proc/{carte.process.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def refused_quickly(carte: Daemon, *args: str) -> str:
    started = time.monotonic()
    done = carte.client(*args, timeout=20)
    took = time.monotonic() - started
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "/etc/passwd" in lines[0] and "regular file" in lines[0], lines
    assert took < 5, f"{args[0]} took {took:.1f}s"
    ok(carte.client("version", timeout=5))
    return lines[0]


def test_image_with_a_fifo_passwd(carte: Daemon, busybox_rootfs: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    (rootfs / "etc/passwd").unlink()
    os.mkfifo(rootfs / "etc/passwd")
    archive = tmp_path / "fifo.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    ok(carte.client("import", str(archive), "fifo-passwd"))
    try:
        refused_quickly(carte, "create", "--user", "app", "fifo-passwd", "true")
        assert ok(carte.client("ps", "-aq")) == ""
    finally:
        carte.client("rmi", "fifo-passwd")


def test_exec_user_with_a_fifo_passwd_in_the_container(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "fifo", "busybox", "sleep", "100000"))
    ok(carte.client("exec", "fifo", "sh", "-c", "rm /etc/passwd && mkfifo /etc/passwd"))
    before = threads(carte)
    for _ in range(3):
        refused_quickly(carte, "exec", "--user", "app", "fifo", "true")
    time.sleep(0.5)
    assert threads(carte) <= before + 1, "a worker thread per try stayed blocked"
    assert ok(carte.client("exec", "--user", "0:0", "fifo", "echo", "still")).strip() == "still"
