"""Console sockets: where the runtime sends the pty master of a terminal container or exec.

The runtime (``--console-socket``) connects once and sends the master fd by SCM_RIGHTS; the
shim receives it and relays the terminal. A container's socket lives in its state directory,
an exec's in a private temporary directory.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def receive_terminal(listener: socket.socket, sender: str) -> int:
    """Accept one connection on a console socket and return the pty master fd sent over it
    (SCM_RIGHTS); raises Internal naming `sender` if none arrives within 10 s or none is sent."""
    from carte.api.errors import Internal

    listener.settimeout(10)
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        raise Internal(f"{sender} sent no terminal on the console socket within 10 s") from None
    with connection:
        _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
    if not fds:
        raise Internal(f"{sender} sent no terminal on the console socket")
    return fds[0]


class _ConsoleSocket:
    """A console socket listening at `address` for one pty master from `sender`."""

    def __init__(self, address: str, sender: str) -> None:
        self.address = address
        self._sender = sender
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(address)
        self._socket.listen(1)

    def receive_master(self) -> int:
        return receive_terminal(self._socket, self._sender)

    def close(self) -> None:
        self._socket.close()


class ContainerConsole(_ConsoleSocket):
    """The console socket of a terminal container, in its state directory."""

    def __init__(self, state_dir: Path, container_id: str) -> None:
        from carte.runtime.shim.protocol import UnixAddress

        self.path = str(state_dir / f".{container_id}.console")
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._address = UnixAddress(self.path)
        super().__init__(self._address.address, "the container")

    def close(self) -> None:
        super().close()
        self._address.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class ExecConsole(_ConsoleSocket):
    """The console socket of a terminal exec, in a private directory of its own."""

    def __init__(self) -> None:
        import tempfile

        self._directory = tempfile.mkdtemp(prefix="carte-exec-")
        super().__init__(os.path.join(self._directory, "console.sock"), "the exec'd process")

    def close(self) -> None:
        super().close()
        try:
            os.unlink(self.address)
            os.rmdir(self._directory)
        except OSError:
            pass
