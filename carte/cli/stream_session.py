"""One interactive stream with the daemon: the terminal (or pipes) on one side, the WebSocket
framing of docs/architecture.md ("Interactive streams") on the other, in one `select` loop.

The loop forwards stdin as stream-0 frames (and "close_stdin" at its end), writes stream 1 to
stdout and 2 to stderr, sends "resize" on SIGWINCH, recognises Docker's detach keys (Ctrl-P
Ctrl-Q) when asked, and ends with the daemon's "exit" or "error" message.
"""

from __future__ import annotations

import json
import os
import select
import sys

from carte.cli.terminal import Hangup, WindowWatch, raw_terminal, window_size
from carte.cli.websocket import BINARY, WebSocket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DETACH_KEYS = b"\x10\x11"  # Ctrl-P Ctrl-Q


class StreamEnd:
    """How a stream ended: the exit code, a daemon error, a detach, or a lost connection."""

    def __init__(
        self,
        *,
        exit_code: int | None = None,
        error: dict[str, Any] | None = None,
        detached: bool = False,
    ) -> None:
        self.exit_code = exit_code
        self.error = error
        self.detached = detached


class StreamSession:
    """Runs one stream until it ends. `stdin`: forward fd 0; `tty`: put fd 0 in raw mode when
    it is a terminal and send resizes; `on_interrupt`: what Ctrl-C does when the terminal is not
    raw (e.g. signal the container); without it Ctrl-C ends the session with 130."""

    def __init__(
        self,
        ws: WebSocket,
        *,
        stdin: bool,
        tty: bool,
        detach_keys: bool = False,
        on_interrupt: Callable[[], None] | None = None,
    ) -> None:
        self.ws = ws
        self.stdin = stdin
        self.tty = tty
        self.detach_keys = detach_keys
        self.on_interrupt = on_interrupt
        self._detach_progress = 0

    def run(self) -> StreamEnd:
        raw = self.tty and self.stdin and os.isatty(0)
        if not raw:
            return self._run_guarded()
        with raw_terminal(0):
            return self._run_guarded()

    def _run_guarded(self) -> StreamEnd:
        watch = WindowWatch() if self.tty and os.isatty(0) else None
        try:
            while True:
                try:
                    return self._loop(watch)
                except KeyboardInterrupt:
                    if self.on_interrupt is None:
                        return StreamEnd(exit_code=130)
                    self.on_interrupt()
        except Hangup as hangup:
            return StreamEnd(exit_code=128 + hangup.signum)
        finally:
            if watch is not None:
                watch.close()

    def _loop(self, watch: WindowWatch | None) -> StreamEnd:
        reading_stdin = self.stdin
        while True:
            sources: list[Any] = [self.ws]
            if reading_stdin:
                sources.append(0)
            if watch is not None:
                sources.append(watch)
            ready, _, _ = select.select(sources, [], [])
            if watch is not None and watch in ready:
                watch.clear()
                rows, cols = window_size(0)
                if rows and cols:
                    self.ws.send_text(json.dumps({"type": "resize", "rows": rows, "cols": cols}))
            if 0 in ready:
                data = os.read(0, 1 << 16)
                if not data:
                    reading_stdin = False
                    self.ws.send_text('{"type": "close_stdin"}')
                elif self.detach_keys and self._detached(data):
                    return StreamEnd(detached=True)
                else:
                    self.ws.send_binary(b"\x00" + data)
            if self.ws in ready:
                for opcode, payload in self.ws.receive_available():
                    end = self._message(opcode, payload)
                    if end is not None:
                        return end
                if self.ws.closed:
                    return StreamEnd(
                        error={"message": "the daemon closed the stream before the exit"}
                    )

    def _detached(self, data: bytes) -> bool:
        """Whether `data` completes the detach sequence (it may span reads); the keys typed
        before it was complete are sent on as usual when the sequence breaks."""
        for byte in data:
            if byte == DETACH_KEYS[self._detach_progress]:
                self._detach_progress += 1
                if self._detach_progress == len(DETACH_KEYS):
                    return True
            else:
                self._detach_progress = 1 if byte == DETACH_KEYS[0] else 0
        return False

    def _message(self, opcode: int, payload: bytes) -> StreamEnd | None:
        if opcode == BINARY:
            target = 2 if payload[:1] == b"\x02" else 1
            _write_all(target, payload[1:])
            return None
        message = json.loads(payload)
        kind = message.get("type")
        if kind == "exit":
            return StreamEnd(exit_code=int(message.get("exit_code", 255)))
        if kind == "error":
            return StreamEnd(error=message)
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except BrokenPipeError:
            return
        view = view[written:]


def print_error(message: str) -> None:
    print(f"carte: {message}", file=sys.stderr)
