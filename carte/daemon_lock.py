"""One daemon per root: an exclusive flock on ROOT/daemon.lock, plus the pid file in the run root.

The lock file holds the owner's pid so a refused daemon can say who holds the root. The kernel
drops the flock when the owner dies, even by SIGKILL, so a stale file never blocks a restart.
The owner then makes the root private (`secure_root`): the root holds containers' environment
(state.db, config.json, logs), build contexts with their .env files and volumes.
"""

import fcntl
import os
import stat
from pathlib import Path

ROOT_MODE = 0o711
"""Other users may pass through (as Docker's), not list; everything below is closed to them."""
PRIVATE_DIRS = (
    "blobs",
    "build-cache",
    "build-contexts",
    "build-scratch",
    "containers",
    "ingest",
    "layers",
    "load-uploads",
)
"""Made 0700 before any handler writes into them (also those made later by handlers)."""
VOLUMES_DIR, VOLUMES_MODE = "volumes", 0o701
"""Docker's mode; each volume's own directory is 0700 and the volumes handler mounts the
directory nosuid,nodev, so a setuid file a container writes gives nobody privileges."""


def secure_root(root: Path) -> None:
    """Make `root` 0711, its directories 0700 (volumes 0701) and its files 0600, creating the
    known directories first so none of them ever exists with a wider mode. Idempotent; raises
    OSError."""
    os.chmod(root, ROOT_MODE)
    for name in (*PRIVATE_DIRS, VOLUMES_DIR):
        mode = VOLUMES_MODE if name == VOLUMES_DIR else 0o700
        try:
            os.mkdir(root / name, mode)
        except FileExistsError:
            pass
    for entry in os.scandir(root):
        kind = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(kind):
            os.chmod(entry.path, VOLUMES_MODE if entry.name == VOLUMES_DIR else 0o700)
        elif stat.S_ISREG(kind):
            os.chmod(entry.path, 0o600)


class RootInUse(Exception):
    """Another live daemon holds the lock; `str()` is the one line to show."""


class DaemonLock:
    """Holds ROOT/daemon.lock (flock) and RUN_ROOT/carte.pid while the daemon runs."""

    def __init__(self, root: Path, run_root: Path) -> None:
        self.lock_path = root / "daemon.lock"
        self.pid_path = run_root / "carte.pid"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, write the pid file and make the root private (`secure_root`).

        Raises RootInUse naming the holder's pid when another daemon owns the root, OSError
        when the directories cannot be created.
        """
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            root = self.lock_path.parent
            raise RootInUse(
                f"carte daemon: root {root} is in use by pid {holder}; stop that daemon or "
                "use another --root"
            ) from None
        pid = f"{os.getpid()}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, pid, 0)
        self._fd = fd
        secure_root(self.lock_path.parent)
        temporary = self.pid_path.with_suffix(".pid.tmp")
        temporary.write_bytes(pid)
        temporary.replace(self.pid_path)

    def release(self) -> None:
        """Remove the pid file and drop the lock; safe to call twice."""
        if self._fd is None:
            return
        try:
            if self.pid_path.read_bytes().strip() == str(os.getpid()).encode():
                self.pid_path.unlink()
        except OSError:
            pass
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None
