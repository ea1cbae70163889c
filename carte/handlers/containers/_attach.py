"""Attaching to a container's own stdio through its shim (docs/shim.md, op "attach").

The shim owns the container's stdio (it also logs it) and streams what the container writes
as base64 output events on the attach connection, then one exit event. Stdin, close_stdin and
resize go over the same connection; the replies of resize are skipped while reading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from carte.handlers.containers._exec import STDERR, STDOUT, Deliver
from carte.handlers.containers._shims import ShimConnection
from carte.runtime.shim.protocol import decode_data, encode_data

_STREAMS = {"stdout": STDOUT, "stderr": STDERR}


class AttachedContainer:
    """A `ProcessIO` for a container's own process. Use `open`, then `aclose` when done."""

    def __init__(self, connection: ShimConnection, state: dict[str, Any]) -> None:
        self._connection = connection
        self.state = state
        self._exit: dict[str, Any] | None = None

    @classmethod
    async def open(cls, state_dir: Path, container_id: str) -> AttachedContainer:
        """Attach; raises `Unavailable` when no shim runs and `ShimError` if it refuses."""
        connection = ShimConnection(state_dir, container_id)
        await connection.__aenter__()
        try:
            reply = await connection.request({"op": "attach"})
        except BaseException:
            await connection.__aexit__(None, None, None)
            raise
        return cls(connection, dict(reply.get("state") or {}))

    async def write_stdin(self, data: bytes) -> None:
        await self._send({"op": "stdin", "data": encode_data(data)})

    async def close_stdin(self) -> None:
        await self._send({"op": "close_stdin"})

    async def resize(self, rows: int, cols: int) -> None:
        await self._send({"op": "resize", "rows": rows, "cols": cols})

    async def _send(self, message: dict[str, Any]) -> None:
        """Send to the shim; once it closed the connection (the container exited and the shim
        is done) the input is dropped: the exit event, already read or on its way, ends the
        session, not a broken pipe."""
        try:
            await self._connection.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def copy_output(self, deliver: Deliver) -> None:
        """Deliver output until the shim's exit event (kept for `wait`) or the end of the
        connection (then `wait` reports exit code 255, as for a lost container)."""
        from carte.api.errors import Unavailable

        while True:
            try:
                event = await self._connection.receive()
            except Unavailable:
                self._exit = self._exit or {"exit_code": 255, "error": "the shim went away"}
                return
            kind = event.get("event")
            if kind == "output":
                await deliver(_STREAMS.get(str(event.get("stream")), STDOUT), _data(event))
            elif kind == "exit":
                self._exit = event
                return

    async def wait(self) -> dict[str, Any]:
        """The exit record; call it after `copy_output` returned."""
        return self._exit or {"exit_code": 255, "error": "the attach stream ended early"}

    async def aclose(self) -> None:
        await self._connection.__aexit__(None, None, None)


def _data(event: dict[str, Any]) -> bytes:
    return decode_data(str(event.get("data", "")))
