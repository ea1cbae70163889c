"""`carte shim factory --socket PATH`: create shims by forking a warm process (optional).

Each `carte shim` pays for an interpreter start and the runtime's imports (0.1-0.4 s here)
before it can create its container. The factory pays once: it imports the runtime, then serves
PATH. Per connection it reads one line, ``{"args": [...]}`` (the arguments of `carte shim`),
forks a child that forks the shim and exits (so the shim is re-parented to init, like one
started by the launcher), and the shim writes its one report line to the connection, exactly
as `carte shim` prints it. The factory is single-threaded, so forking it is safe.

The factory exits when its daemon is gone: its stdin reaches end of file (the daemon held the
other end), its parent changes (the daemon died while something it forked still holds that
end), or PATH is removed or taken by another socket (checked every second); and on SIGTERM.
Shims it made do not depend on it. A forked shim shows as `carte-shim -id ID` at once, and
so does the container's init it parks until start: nothing in a container's cgroup reads
as the factory. A forked shim runs its monitor in place (no exec), so the modules imported
here stay shared with it and the exec helpers it forks start warm (docs/shim.md has the
memory this costs).
"""

from __future__ import annotations

import gc
import os
import select
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_USAGE = "usage: carte shim factory --socket PATH"


def main(argv: list[str]) -> NoReturn:
    from carte.runtime.shim.protocol import UnixAddress

    if len(argv) != 2 or argv[0] != "--socket":
        print(_USAGE, file=sys.stderr)
        raise SystemExit(2)
    _preload()
    path = argv[1]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with UnixAddress(path) as address:
        listener.bind(address)
    listener.listen(64)
    inode = os.stat(path).st_ino
    print("ready", flush=True)  # the starter may connect from now on
    try:
        _serve(listener, os.getppid(), path, inode)
    finally:
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    os._exit(0)


def _preload() -> None:
    """Import now what every create and exec needs, so forked children start warm (and
    share these pages with the factory)."""
    import carte.api.errors
    import carte.runtime.cgroups
    import carte.runtime.container
    import carte.runtime.seccomp
    import carte.runtime.shim._monitor
    import carte.runtime.shim._runtime_steps
    import carte.runtime.shim.protocol
    import carte.runtime.spec

    carte.runtime.seccomp.import_compiler()
    del carte
    # Shims share these objects copy-on-write; a collection in a shim would write to each one.
    gc.freeze()


def _serve(listener: socket.socket, parent: int, path: str, inode: int) -> None:
    """Serve connections one at a time until the daemon is gone (see the module docstring)."""
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [], 1.0)
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            return
        if os.getppid() != parent or not _still_serving(path, inode):
            return
        if listener in ready:
            connection, _ = listener.accept()
            with connection:
                _create(connection, listener)


def _still_serving(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _create(connection: socket.socket, listener: socket.socket) -> None:
    """Read one request from `connection` and fork a shim that answers on it."""
    from carte.runtime.shim._create import become_shim
    from carte.runtime.shim._options import parse_options
    from carte.runtime.shim.protocol import ProtocolError, decode_line, encode_line

    connection.settimeout(10)
    line = b""
    try:
        while not line.endswith(b"\n"):
            chunk = connection.recv(1 << 16)
            if not chunk:
                return
            line += chunk
        args = decode_line(line)["args"]
        options = parse_options([str(arg) for arg in args])
    except (OSError, ProtocolError, KeyError, TypeError, ValueError) as error:
        reply = {"ok": False, "error": f"bad factory request: {error}", "code": "invalid_argument"}
        try:
            connection.sendall(encode_line(reply))
        except OSError:
            pass
        return
    child = os.fork()
    if child == 0:
        try:
            listener.close()
            if os.fork() == 0:
                _retitle(f"carte-shim -id {options.id}")
                connection.setblocking(True)
                report_fd = connection.detach()
                become_shim(options, report_fd, in_place=True)
        finally:
            os._exit(0)
    os.waitpid(child, 0)


def _retitle(title: str) -> None:
    from carte.runtime.proctitle import set_process_title

    try:
        set_process_title(title)
    except OSError:
        pass
