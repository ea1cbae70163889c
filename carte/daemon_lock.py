"""One daemon per root: an exclusive flock on ROOT/daemon.lock, plus the pid file in the run root.

The lock file holds the owner's pid so a refused daemon can say who holds the root. The kernel
drops the flock when the owner dies, even by SIGKILL, so a stale file never blocks a restart.
"""

import fcntl
import os
from pathlib import Path


class RootInUse(Exception):
    """Another live daemon holds the lock; `str()` is the one line to show."""


class DaemonLock:
    """Holds ROOT/daemon.lock (flock) and RUN_ROOT/carte.pid while the daemon runs."""

    def __init__(self, root: Path, run_root: Path) -> None:
        self.lock_path = root / "daemon.lock"
        self.pid_path = run_root / "carte.pid"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write the pid file.

        Raises RootInUse naming the holder's pid when another daemon owns the root, OSError
        when the directories cannot be created.
        """
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
