"""Interactive processes for the WebSocket routes: a new process in a running container (exec),
with its stdio as pipes or a terminal, seen through one small interface, `ProcessIO`.

Exec goes through the container's shim (docs/shim.md): without a terminal the process gets
this side's socket pairs as stdin, stdout and stderr (the shim copies nothing); with one, the
shim hands back the master of a pty made in the container's own devpts, which is read here in
a worker thread (a pty master is no socket trio can wait on without its low-level API).
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from carte.api.errors import Unavailable
from carte.runtime.shim.client import ShimError
from carte.runtime.shim.protocol import LineBuffer, UnixAddress, decode_line, encode_line

STDIN, STDOUT, STDERR = 0, 1, 2
Deliver = Callable[[int, bytes], Awaitable[None]]
_CHUNK = 1 << 16
# A terminal's reader waits this long per wake-up, so cancelling it takes at most this long.
_TTY_POLL = 0.2


class ProcessIO(Protocol):
    """The stdio of an attached container or an exec'd process, as the routes pump it."""

    async def write_stdin(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...
    async def resize(self, rows: int, cols: int) -> None: ...
    async def copy_output(self, deliver: Deliver) -> None:
        """Hand every piece of output to `deliver(stream, data)` until all output streams end."""
        ...

    async def wait(self) -> dict[str, Any]:
        """The exit record ({"exit_code", ...}) once the process has exited."""
        ...

    async def aclose(self) -> None: ...


class _ShimExecConnection:
    """The exec request on its own connection to the shim, with fds passed both ways."""

    def __init__(self, sock: trio.socket.SocketType, path: str) -> None:
        self._sock = sock
        self._path = path
        self._lines = LineBuffer()
        self._queued: list[bytes] = []
        self.fds: list[int] = []

    @classmethod
    async def open(cls, shim_socket: str) -> _ShimExecConnection:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with UnixAddress(shim_socket) as address:
                await sock.connect(address)
        except OSError as error:
            sock.close()
            raise Unavailable(
                f"shim socket {shim_socket}: cannot connect ({error.strerror}); the container "
                "is not running"
            ) from None
        return cls(sock, shim_socket)

    async def send(self, message: dict[str, Any], fds: list[int]) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        await self._sock.sendmsg([encode_line(message)], ancillary)

    async def receive(self) -> dict[str, Any]:
        """The next line; fds that came with it are appended to `fds`. `Unavailable` at EOF."""
        while not self._queued:
            data, ancillary, _, _ = await self._sock.recvmsg(_CHUNK, socket.CMSG_SPACE(16))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    self.fds.extend(array.array("i", payload[:usable]))
            if not data:
                raise Unavailable(f"shim {self._path} closed the connection")
            self._queued.extend(self._lines.feed(data))
        return decode_line(self._queued.pop(0))

    def close(self) -> None:
        self._sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


async def start_exec(
    shim_socket: str, process: dict[str, Any], *, tty: bool, stdin: bool
) -> ProcessIO:
    """Start `process` (an OCI process; omitted fields are the container's) through the shim.

    Raises `Unavailable` when the shim is gone and `ShimError` (one line) when it refuses, e.g.
    the container stopped meanwhile. Cancellation closes what was opened; a process already
    started keeps running (its exit code is then dropped by the shim).
    """
    connection = await _ShimExecConnection.open(shim_socket)
    try:
        if tty:
            return await _start_terminal(connection, process)
        return await _start_piped(connection, process, stdin=stdin)
    except BaseException:
        connection.close()
        raise


async def start_detached(shim_socket: str, process: dict[str, Any]) -> int:
    """Start `process` with its stdio on /dev/null and leave it running (`exec -d`); its pid.
    Errors as `start_exec`."""
    connection = await _ShimExecConnection.open(shim_socket)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        return await _request_exec(connection, {**process, "terminal": False}, False, [null] * 3)
    finally:
        os.close(null)
        connection.close()


async def _request_exec(
    connection: _ShimExecConnection, process: dict[str, Any], tty: bool, fds: list[int]
) -> int:
    await connection.send({"op": "exec", "process": process, "tty": tty}, fds)
    reply = await connection.receive()
    if not reply.get("ok"):
        raise ShimError(str(reply.get("error")))
    return int(reply["pid"])


async def _start_terminal(connection: _ShimExecConnection, process: dict[str, Any]) -> ProcessIO:
    await _request_exec(connection, {**process, "terminal": True}, True, [])
    if not connection.fds:
        raise ShimError("the shim gave no terminal for the exec")
    master = connection.fds.pop(0)
    return _TerminalExec(connection, master)


async def _start_piped(
    connection: _ShimExecConnection, process: dict[str, Any], *, stdin: bool
) -> ProcessIO:
    ours: list[socket.socket] = []
    theirs: list[int] = []
    try:
        if stdin:
            mine, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            mine.shutdown(socket.SHUT_RD)
            child.shutdown(socket.SHUT_WR)
            ours.append(mine)
            theirs.append(child.detach())
        else:
            theirs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        for _ in (STDOUT, STDERR):
            mine, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            mine.shutdown(socket.SHUT_WR)
            child.shutdown(socket.SHUT_RD)
            ours.append(mine)
            theirs.append(child.detach())
        await _request_exec(connection, {**process, "terminal": False}, False, theirs)
    except BaseException:
        for sock in ours:
            sock.close()
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    streams = [trio.SocketStream(trio.socket.from_stdlib_socket(sock)) for sock in ours]
    stdin_stream = streams.pop(0) if stdin else None
    return _PipedExec(connection, stdin_stream, streams[0], streams[1])


async def _wait_exit(connection: _ShimExecConnection) -> dict[str, Any]:
    while True:
        event = await connection.receive()
        if event.get("event") == "exit":
            return {"exit_code": int(event["exit_code"])}


class _PipedExec:
    """An exec'd process whose stdio are socket pairs."""

    def __init__(
        self,
        connection: _ShimExecConnection,
        stdin: trio.SocketStream | None,
        stdout: trio.SocketStream,
        stderr: trio.SocketStream,
    ) -> None:
        self._connection = connection
        self._stdin = stdin
        self._streams = {STDOUT: stdout, STDERR: stderr}

    async def write_stdin(self, data: bytes) -> None:
        if self._stdin is not None:
            try:
                await self._stdin.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the process closed its stdin; what it did not read is dropped

    async def close_stdin(self) -> None:
        if self._stdin is not None:
            await self._stdin.aclose()

    async def resize(self, rows: int, cols: int) -> None:
        return  # no terminal: nothing to resize

    async def copy_output(self, deliver: Deliver) -> None:
        async with trio.open_nursery() as nursery:
            for stream_id, stream in self._streams.items():
                nursery.start_soon(_copy_stream, stream_id, stream, deliver)

    async def wait(self) -> dict[str, Any]:
        return await _wait_exit(self._connection)

    async def aclose(self) -> None:
        for stream in [*self._streams.values(), *([self._stdin] if self._stdin else [])]:
            await stream.aclose()
        self._connection.close()


class _TerminalExec:
    """An exec'd process on a pty whose master this side holds."""

    def __init__(self, connection: _ShimExecConnection, master: int) -> None:
        self._connection = connection
        self._master = master
        self._limiter = trio.CapacityLimiter(2)

    async def write_stdin(self, data: bytes) -> None:
        master = self._master
        await trio.to_thread.run_sync(_write_all, master, data, limiter=self._limiter)

    async def close_stdin(self) -> None:
        await self.write_stdin(b"\x04")  # a terminal's end of file is ^D

    async def resize(self, rows: int, cols: int) -> None:
        set_window_size(self._master, rows, cols)

    async def copy_output(self, deliver: Deliver) -> None:
        while True:
            data = await trio.to_thread.run_sync(_read_ready, self._master, _TTY_POLL)
            if data is None:
                continue
            if not data:
                return
            await deliver(STDOUT, data)

    async def wait(self) -> dict[str, Any]:
        return await _wait_exit(self._connection)

    async def aclose(self) -> None:
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
        self._connection.close()


async def _copy_stream(stream_id: int, stream: trio.SocketStream, deliver: Deliver) -> None:
    while True:
        try:
            data = await stream.receive_some(_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        await deliver(stream_id, data)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a pty; the foreground process group gets SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_ready(fd: int, wait: float) -> bytes | None:
    """Blocking: what `fd` has within `wait` seconds, None if nothing, b"" at its end (a pty
    master reads EIO once every slave is closed)."""
    ready, _, _ = select.select([fd], [], [], wait)
    if not ready:
        return None
    try:
        return os.read(fd, _CHUNK)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except OSError:
            return  # the terminal is gone: the process ended
        data = data[written:]


def exec_process(
    *, cmd: list[str], env: list[str], workdir: str, user: dict[str, Any] | None, tty: bool
) -> dict[str, Any]:
    """The OCI process of an exec: what it sets; the shim fills the rest from the container."""
    process: dict[str, Any] = {"args": cmd, "env": env, "terminal": tty}
    if workdir:
        process["cwd"] = workdir
    if user is not None:
        process["user"] = user
    return process


__all__ = [
    "STDERR",
    "STDIN",
    "STDOUT",
    "Deliver",
    "ProcessIO",
    "exec_process",
    "set_window_size",
    "start_detached",
    "start_exec",
]
