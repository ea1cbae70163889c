"""The client's terminal: raw mode restored on every way out, and window-size changes.

`raw_terminal(fd)` puts a terminal in raw mode (every key, Ctrl-C included, goes to the
container's own terminal as a byte) and restores the saved settings when the block ends, by
return, exception, Ctrl-C or SIGTERM/SIGHUP (turned into `Hangup` so the block unwinds).
`WindowWatch` makes SIGWINCH readable on a pipe so a `select` loop notices resizes.
"""

from __future__ import annotations

import os
import signal
import termios
from contextlib import contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType


class Hangup(Exception):
    """SIGTERM or SIGHUP arrived while the terminal was raw; the caller unwinds and exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _hang_up(signum: int, frame: FrameType | None) -> None:
    raise Hangup(signum)


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on `fd` for the block; the settings before it come back however it ends."""
    saved = termios.tcgetattr(fd)
    raw = termios.tcgetattr(fd)
    raw[0] &= ~(
        termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON
    )  # iflag
    raw[1] &= ~termios.OPOST  # oflag: the container's terminal already did output processing
    raw[2] = (raw[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8  # cflag
    raw[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)  # lflag
    raw[6][termios.VMIN] = 1
    raw[6][termios.VTIME] = 0
    previous = {sig: signal.signal(sig, _hang_up) for sig in (signal.SIGTERM, signal.SIGHUP)}
    termios.tcsetattr(fd, termios.TCSANOW, raw)  # keep what was typed ahead
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def window_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal at `fd`; (0, 0) when it is not a terminal."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 0, 0
    return size.lines, size.columns


class WindowWatch:
    """SIGWINCH made readable: `fileno()` becomes readable after a resize; `clear()` it."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = signal.signal(signal.SIGWINCH, self._changed)

    def _changed(self, signum: int, frame: FrameType | None) -> None:
        try:
            os.write(self._write, b"w")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def fileno(self) -> int:
        return self._read

    def clear(self) -> None:
        try:
            while os.read(self._read, 64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.signal(signal.SIGWINCH, self._previous)
        os.close(self._read)
        os.close(self._write)
