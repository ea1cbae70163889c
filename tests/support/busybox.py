"""Build a minimal root filesystem from Debian's busybox-static, for tests and benchmarks.

Used by the `busybox_rootfs` and `busybox_tar` fixtures (support/fixtures.py) and by bench/
scripts: `python tests/support/busybox.py DIR` writes the rootfs into DIR; `--tar FILE WORKDIR`
writes it as a tar archive instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def make_rootfs(dest: Path) -> Path:
    """Write a busybox rootfs into `dest` (created if missing) and return it."""
    if not BUSYBOX.exists():
        raise SystemExit("busybox-static is not installed: apt-get install -y busybox-static")
    dest.mkdir(parents=True, exist_ok=True)
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = dest / applet
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    return dest


def make_rootfs_tar(dest_tar: Path, workdir: Path) -> Path:
    """Write a busybox rootfs as an uncompressed tar archive (as `docker export` would)."""
    root = make_rootfs(workdir / "busybox-rootfs")
    with tarfile.open(dest_tar, "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    return dest_tar


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--tar":
        make_rootfs_tar(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        make_rootfs(Path(sys.argv[1]))
    else:
        raise SystemExit("usage: busybox.py DIR | --tar FILE WORKDIR")
