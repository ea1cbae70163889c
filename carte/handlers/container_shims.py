"""The daemon's side of the per-container shim (docs/shim.md), in trio.

`create_under_shim` runs `carte shim` and returns its report; `ShimConnection` is one
connection to a shim's socket speaking JSON lines (cancellable, unlike the blocking
`ShimClient`); `cleanup_runtime` removes what the runtime left of a container whose shim is
gone (cgroup, state directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from carte.api.errors import Unavailable
from carte.runtime.shim_client import ShimError, parse_report, shim_command, socket_path
from carte.runtime.shim_protocol import LineBuffer, UnixAddress, decode_line, encode_line


async def create_under_shim(
    *,
    container_id: str,
    bundle: Path,
    state_dir: Path,
    log_path: Path,
    log_max_size: int,
    log_max_file: int,
    stdin: bool,
) -> dict[str, Any]:
    """Create the container under a new shim; the shim's report (`pid`, `socket`...).

    Raises the `CarteError` the shim reported; the shim has then removed what it made. On
    cancellation the launcher is killed (a shim it already forked is cleaned up by the caller
    with `cleanup_runtime`).
    """
    argv = shim_command(
        container_id=container_id,
        bundle=bundle,
        state_dir=state_dir,
        log_path=log_path,
        log_max_size=log_max_size,
        log_max_file=log_max_file,
        stdin=stdin,
    )
    result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if not result.stdout.strip() and result.returncode != 0:
        raise ShimError(
            f"carte shim exited {result.returncode} without a report: "
            + result.stderr.decode(errors="replace").strip()[-300:]
        )
    return parse_report(result.stdout)


class ShimConnection:
    """One connection to a container's shim. Use as an async context manager."""

    def __init__(self, state_dir: Path, container_id: str) -> None:
        self.path = socket_path(state_dir, container_id)
        self._stream: trio.SocketStream | None = None
        self._lines = LineBuffer()
        self._queued: list[bytes] = []

    async def __aenter__(self) -> ShimConnection:
        with UnixAddress(str(self.path)) as address:
            try:
                self._stream = await trio.open_unix_socket(address)
            except OSError as error:
                raise Unavailable(
                    f"shim socket {self.path}: cannot connect ({error.strerror}); "
                    "the shim is not running"
                ) from None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def send(self, message: dict[str, Any]) -> None:
        assert self._stream is not None
        await self._stream.send_all(encode_line(message))

    async def receive(self) -> dict[str, Any]:
        """The next line; `Unavailable` if the shim closed the connection."""
        assert self._stream is not None
        while not self._queued:
            data = await self._stream.receive_some(1 << 16)
            if not data:
                raise Unavailable(f"shim {self.path} closed the connection")
            self._queued.extend(self._lines.feed(data))
        return decode_line(self._queued.pop(0))

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request; its reply. `ShimError` (one line) when the shim refused it."""
        await self.send(message)
        reply = await self.receive()
        if not reply.get("ok"):
            raise ShimError(str(reply.get("error")))
        return reply


async def shim_request(state_dir: Path, container_id: str, message: dict[str, Any]) -> dict[str, Any]:
    """One request on a fresh connection. Raises `Unavailable` (no shim) or `ShimError`."""
    async with ShimConnection(state_dir, container_id) as connection:
        return await connection.request(message)


def cleanup_runtime(state_dir: Path, container_id: str) -> None:
    """Blocking: kill what is left of the container and remove its cgroup and runtime state
    directory; nothing to do is not an error. Run it in a worker thread."""
    from carte.runtime.container import delete

    delete(state_dir, container_id, force=True)
