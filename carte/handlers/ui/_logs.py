"""A container's live log for the dashboard, over a WebSocket.

The container is found with `InspectContainer` (as ``carte logs`` does) and its json-file log
read with the runtime's `LogFollower`: the last `BACKLOG` lines, then every new line as one
text frame ``{"stream", "log", "time"}``. An unknown container gets one ``{"error"}`` frame.
The session ends when the browser leaves (the task is cancelled; the log file is closed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import trio
from quart import websocket

from carte.api.errors import CarteError
from carte.api.events import InspectContainer
from carte.runtime.logs import LogEntry, LogFollower

if TYPE_CHECKING:
    from carte.handlers.ui._handler import UiHandler

BACKLOG = 200
POLL_SECONDS = 0.25
_encoder = msgspec.json.Encoder()


def _frame(entry: LogEntry) -> str:
    line = {"stream": entry.stream, "log": entry.text.rstrip("\n"), "time": entry.time}
    return _encoder.encode(line).decode()


async def serve_logs(ui: UiHandler, ref: str) -> None:
    """A container's log, then its new lines as they are written (dashboard WebSocket)."""
    await websocket.accept()
    try:
        details = await ui.ctx.bus.request(InspectContainer(ref=ref))
    except CarteError as error:
        await websocket.send(_encoder.encode({"error": error.message}).decode())
        return
    follower = LogFollower(details.log_path)
    try:
        for entry in follower.backlog(tail=BACKLOG):
            await websocket.send(_frame(entry))
        while True:
            for entry in follower.poll():
                await websocket.send(_frame(entry))
            await trio.sleep(POLL_SECONDS)
    finally:
        follower.close()
