"""The container's terminal: a pty from its own devpts, the master handed to the engine.

As runc does, the pty is opened inside the container (after pivot_root, so /dev/ptmx is the
container's devpts instance) and the master goes to the engine's console socket over
SCM_RIGHTS; the slave becomes the process's controlling terminal and stdio.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

from carte.api.errors import InvalidArgument
from carte.runtime.spec import ConsoleSize

__all__ = ["connect_console", "setup_terminal"]

_TIOCSCTTY = 0x540E
_TIOCSWINSZ = 0x5414


def connect_console(console_socket: Path | None) -> socket.socket:
    """Connect to the engine's console socket (before pivot_root: it is a host path).

    Raises `InvalidArgument` naming the socket when it is missing or refuses.
    """
    if console_socket is None:
        raise InvalidArgument(
            "process.terminal is true but no console socket was given; pass --console-socket "
            "or set terminal to false"
        )
    console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        console.connect(str(console_socket))
    except OSError as error:
        console.close()
        raise InvalidArgument(
            f"console socket {console_socket}: cannot connect ({error.strerror}); check the path"
        ) from None
    return console


def setup_terminal(console: socket.socket, size: ConsoleSize | None) -> None:
    """Open a pty, send its master over `console`, and make the slave our controlling
    terminal and fds 0-2. Raises `OSError`; the caller reports it and exits."""
    master, replica = os.openpty()
    if size is not None and size.height and size.width:
        fcntl.ioctl(replica, _TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))
    socket.send_fds(console, [b"/dev/ptmx"], [master])
    console.close()
    os.close(master)
    os.setsid()
    fcntl.ioctl(replica, _TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(replica, target)
    if replica > 2:
        os.close(replica)
