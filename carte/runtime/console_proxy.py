"""`carte runtime run` of a terminal container without an engine: be the console ourselves.

A listening socket in the container's state directory receives the pty master (the runtime
sends it during create); then our own terminal is put in raw mode and bytes are copied both
ways until the container's pid 1 exits. Window size changes are passed on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import termios
import tty
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ConsoleListener", "proxy_until_exit"]

_TIOCGWINSZ = 0x5413
_TIOCSWINSZ = 0x5414


class ConsoleListener:
    """A console socket at `path`; `receive_master` returns the pty master sent to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(str(path))
        self._socket.listen(1)

    def receive_master(self) -> int:
        """Accept the runtime's connection and take the fd it sent. Raises `OSError` if none
        came (the create failed first)."""
        connection, _ = self._socket.accept()
        with connection:
            _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
        if not fds:
            raise OSError("the container sent no terminal over the console socket")
        return fds[0]

    def close(self) -> None:
        self._socket.close()
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _copy_window_size(source: int, target: int) -> None:
    if os.isatty(source):
        size = fcntl.ioctl(source, _TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, _TIOCSWINSZ, size)


def proxy_until_exit(master: int, pid: int) -> int:
    """Copy stdin to `master` and `master` to stdout until `pid` (our child) exits; return its
    wait status. Closes `master`."""
    _copy_window_size(0, master)
    signal.signal(signal.SIGWINCH, lambda _signum, _frame: _copy_window_size(0, master))
    stdin_open = True
    with _raw_terminal(0):
        while True:
            readable = [master, 0] if stdin_open else [master]
            try:
                ready, _, _ = select.select(readable, [], [], 0.1)
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if data:
                    os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    stdin_open = False
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _drain(master)
                os.close(master)
                return status


def _drain(master: int) -> None:
    while select.select([master], [], [], 0)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        os.write(1, data)
