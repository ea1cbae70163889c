"""Docker's exec instances and interactive hijacked connections, on Carte's own interactive
streams (the attach and exec WebSockets of Carte's API, see `_carte_api`).

Docker's exec is two steps: ``POST /containers/ID/exec`` makes an exec instance (`ExecRecord`,
kept in `Sessions` for the daemon's run), ``POST /exec/ID/start`` runs it on a hijacked
connection. `bridge` copies that connection to and from Carte's WebSocket: client bytes are
stdin, Carte's output frames go back raw (TTY) or in Docker's multiplexed framing, and the
exit code is recorded before the connection is closed (the CLI reads it right after, through
``GET /exec/ID/json``). Resizes arriving on other connections reach the live stream.
A refusal before the upgrade is raised as the `CarteError` Carte sent; a client that leaves
ends its session only (the process keeps running, as with Docker).
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import msgspec
import trio

from carte.api.containers import ContainerDetails, ExecOptions
from carte.api.errors import ERRORS_BY_CODE, CarteError, Conflict, Internal, NotFound
from carte.handlers.docker._carte_api import CarteApi, CarteStream

_CHUNK = 1 << 16
STDOUT, STDERR = 1, 2
EXEC_FAILED = 126  # dockerd's exit code for an exec that could not start


class ExecRecord:
    def __init__(self, container_id: str, options: ExecOptions, stdout: bool, stderr: bool) -> None:
        self.id = os.urandom(32).hex()
        self.container_id = container_id
        self.options = options
        self.wanted = {s for s, on in ((STDOUT, stdout), (STDERR, stderr)) if on}
        self.running = False
        self.started = False
        self.exit_code: int | None = None
        self.pid = 0

    def shape(self) -> dict[str, Any]:
        """``GET /exec/ID/json``."""
        options = self.options
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": options.tty,
                "entrypoint": options.cmd[0],
                "arguments": options.cmd[1:],
                "privileged": False,
                "user": options.user,
            },
            "OpenStdin": options.stdin,
            "OpenStderr": STDERR in self.wanted,
            "OpenStdout": STDOUT in self.wanted,
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": "",
            "Pid": self.pid,
        }


class Sessions:
    """The exec instances and live interactive streams of the Docker socket (the daemon's run)."""

    def __init__(self, api: CarteApi) -> None:
        self.api = api
        self.execs: dict[str, ExecRecord] = {}
        self.live: dict[str, CarteStream] = {}
        """Open streams by exec id or container id, for resizes."""
        self._early_sizes: dict[str, tuple[int, int]] = {}
        self.attached_at: dict[str, float] = {}
        """When an interactive attach started a container: `wait` counts exits from then."""

    def exec_record(self, exec_id: str) -> ExecRecord:
        record = self.execs.get(exec_id)
        if record is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return record

    def _claim(self, record: ExecRecord) -> ExecOptions:
        if record.started:
            raise Conflict(f"exec {record.id} has already been started")
        record.started = True
        return record.options

    async def detach_exec(self, record: ExecRecord) -> None:
        """Start `record` in the background (``Detach: true``)."""
        options = msgspec.structs.replace(self._claim(record), detach=True)
        async with self.api.open_stream(f"/v1/containers/{record.container_id}/exec") as stream:
            await stream.send_control(msgspec.to_builtins(options))
            record.pid = int((await _until_started(stream)).get("pid") or 0)
            record.exit_code = 0

    async def run_exec(self, client: trio.SocketStream, record: ExecRecord, early: bytes) -> None:
        """Run `record` on the hijacked `client`. The upgrade is answered before the process
        starts, as dockerd does: a client that reads the answer's head apart from the stream
        (docker-py) would otherwise lose output that came in the same read. A process that
        cannot start is told on the stream as dockerd tells it (its message on stdout, exit
        code 126)."""
        options = self._claim(record)
        framed = not options.tty
        await client.send_all(upgraded(framed=framed))
        record.running = True
        try:
            target = f"/v1/containers/{record.container_id}/exec"
            async with self.api.open_stream(target) as stream:
                await stream.send_control(msgspec.to_builtins(options))
                record.pid = int((await _until_started(stream)).get("pid") or 0)
                self.live[record.id] = stream
                if size := self._early_sizes.pop(record.id, None):
                    await self.resize(record.id, *size)  # it came before the process started
                code = await bridge(
                    client, stream, framed=framed, stdin=options.stdin, wanted=record.wanted,
                    early=early,
                )  # fmt: skip
                record.exit_code = 255 if code is None else code
        except CarteError as error:
            record.exit_code = EXEC_FAILED
            told = (error.message + "\n").encode()
            await client.send_all(frame(STDOUT, told) if framed else told)
        finally:
            record.running = False
            self.live.pop(record.id, None)
            self._early_sizes.pop(record.id, None)

    async def attach(
        self, client: trio.SocketStream, details: ContainerDetails, wanted: set[int], early: bytes
    ) -> None:
        """Attach with stdin: Carte's attach stream, which starts a container that is not
        running yet once attached (so `docker run -it` misses no output)."""
        start = not details.state.running
        if start:
            self.attached_at[details.id] = time.time()
        target = f"/v1/containers/{details.id}/attach?stdin=1&start={int(start)}"
        async with self.api.open_stream(target) as stream:
            await _until_started(stream)
            self.live[details.id] = stream
            try:
                framed = not details.config.tty
                await client.send_all(upgraded(framed=framed))
                await bridge(client, stream, framed=framed, stdin=True, wanted=wanted, early=early)
            finally:
                self.live.pop(details.id, None)

    async def resize(self, key: str, rows: int, cols: int) -> None:
        """Resize the live stream `key`; an exec's size that comes while its process is
        starting is applied once it started."""
        stream = self.live.get(key)
        if rows <= 0 or cols <= 0:
            return
        if stream is not None:
            await stream.send_control({"type": "resize", "rows": rows, "cols": cols})
        elif (record := self.execs.get(key)) is not None and record.running:
            self._early_sizes[key] = (rows, cols)


async def _until_started(stream: CarteStream) -> dict[str, Any]:
    """The "started" control message; raises the CarteError an "error" message names."""
    while True:
        message = await stream.receive()
        if message is None:
            raise Internal("Carte closed the interactive stream before it started")
        if isinstance(message, dict):
            if message.get("type") == "started":
                return message
            if message.get("type") == "error":
                raise stream_error(message)


def stream_error(message: dict[str, Any]) -> CarteError:
    cls = ERRORS_BY_CODE.get(str(message.get("code")), Internal)
    return cls(str(message.get("message") or "the interactive stream failed"))


def frame(which: int, data: bytes) -> bytes:
    """`data` in Docker's multiplexed framing (stream id, three zero bytes, length)."""
    return struct.pack(">BxxxL", which, len(data)) + data


def upgraded(*, framed: bool) -> bytes:
    kind = b"multiplexed-stream" if framed else b"raw-stream"
    return (
        b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker." + kind
        + b"\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )  # fmt: skip


async def bridge(
    client: trio.SocketStream,
    stream: CarteStream,
    *,
    framed: bool,
    stdin: bool,
    wanted: set[int],
    early: bytes = b"",
) -> int | None:
    """Copy `client` (stdin) and `stream` (output) until Carte sends the exit; answers the
    exit code (None when the stream ended without one)."""
    code: int | None = None
    async with trio.open_nursery() as nursery:
        if stdin:
            nursery.start_soon(_pump_stdin, client, stream, early)
        while (message := await stream.receive()) is not None:
            if isinstance(message, bytes):
                which, data = message[0], message[1:]
                if which in wanted and data:
                    await client.send_all(frame(which, data) if framed else data)
            elif message.get("type") == "exit":
                code = int(str(message.get("exit_code", 255)))
                break
            elif message.get("type") == "error":
                raise stream_error(message)
        nursery.cancel_scope.cancel()
    return code


async def _pump_stdin(client: trio.SocketStream, stream: CarteStream, early: bytes) -> None:
    """Client bytes to the process's stdin; the client's half-close is the end of input."""
    data = early
    while True:
        if data:
            await stream.send_bytes(b"\x00" + data)
        try:
            data = await client.receive_some(_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            await stream.send_control({"type": "close_stdin"})
            return
