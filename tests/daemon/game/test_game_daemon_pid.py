"""RUN_ROOT/daemon.pid names the daemon itself, so `kill -9 $(cat /run/carte/daemon.pid)` kills
the daemon (and a supervisor restarts it) instead of the supervisor; the file goes at a
graceful stop, and a daemon that replaced it after a SIGKILL is not undone by a stale one."""

from __future__ import annotations

import signal

from support.daemon import DaemonFactory


def test_daemon_pid_file_names_the_daemon() -> None:
    factory = DaemonFactory()
    try:
        daemon = factory()
        assert daemon.process is not None
        pid_file = daemon.run_root / "daemon.pid"
        assert pid_file.read_text() == f"{daemon.process.pid}\n"
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        daemon.start()  # what a supervisor does: the new daemon takes the file over
        assert pid_file.read_text() == f"{daemon.process.pid}\n"
        assert daemon.stop() == 0
        assert not pid_file.exists()
    finally:
        factory.cleanup()
