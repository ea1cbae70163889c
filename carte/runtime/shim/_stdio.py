"""The container's stdio as the shim holds it: output pipes (or the pty master) and stdin.

Output is read as it comes, written to the json-file log and passed to `on_output` (the
attached clients). Stdin data is written without blocking; what the pipe or pty does not take
yet waits for it to become writable.
"""

from __future__ import annotations

import fcntl
import os
import sys

from carte.runtime.logs import JsonFileLog
from carte.runtime.shim._loop import CLOSED, READABLE, WRITABLE, EventLoop

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_READ_SIZE = 1 << 14
_END_OF_INPUT = b"\x04"  # ^D: how a terminal says end of input
_TIOCSWINSZ = 0x5414  # Linux; the termios module would cost memory for one constant


class ContainerStdio:
    """Either `pty_fd` (a terminal container) or the stdout/stderr pipes, plus stdin.

    `stdin_fd` is -1 when the container's stdin is /dev/null. Write errors of the log (disk
    full) raise OSError from the loop's handler, which the loop reports; output goes on.
    """

    def __init__(
        self,
        loop: EventLoop,
        log: JsonFileLog,
        on_output: Callable[[str, bytes], None],
        *,
        pty_fd: int,
        stdin_fd: int,
        stdout_fd: int,
        stderr_fd: int,
    ) -> None:
        self._loop = loop
        self._log = log
        self._on_output = on_output
        self.pty_fd = pty_fd
        self._stdin_fd = stdin_fd
        self._pending = b""
        self._close_stdin_when_flushed = False
        self._outputs: dict[int, str] = {}
        streams = {pty_fd: "stdout"} if pty_fd >= 0 else {stdout_fd: "stdout", stderr_fd: "stderr"}
        for fd, stream in streams.items():
            os.set_blocking(fd, False)
            self._outputs[fd] = stream
            loop.watch(fd, self._output_handler(fd))
        if stdin_fd >= 0:
            os.set_blocking(stdin_fd, False)

    @property
    def output_open(self) -> bool:
        """Whether some output stream has not reached its end yet."""
        return bool(self._outputs)

    def write_stdin(self, data: bytes) -> None:
        """Queue `data` for the container's stdin (dropped when it has none)."""
        if self._stdin_target() >= 0:
            self._pending += data
            self._flush_stdin()

    def close_stdin(self) -> None:
        """End the container's input: close the pipe once flushed; ^D on a terminal."""
        if self.pty_fd >= 0:
            self.write_stdin(_END_OF_INPUT)
            return
        self._close_stdin_when_flushed = True
        self._flush_stdin()

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's window size. Raises OSError if the pty is gone."""
        size = b"".join(value.to_bytes(2, sys.byteorder) for value in (rows, cols, 0, 0))
        fcntl.ioctl(self.pty_fd, _TIOCSWINSZ, size)  # struct winsize: four unsigned shorts

    def close_outputs(self) -> None:
        """Stop reading output (the container has exited and its log is being closed)."""
        for fd in list(self._outputs):
            self._close_output(fd, flush_log=False)

    def _stdin_target(self) -> int:
        return self.pty_fd if self.pty_fd >= 0 else self._stdin_fd

    def _output_handler(self, fd: int) -> Callable[[int], None]:
        def on_events(events: int) -> None:
            if events & WRITABLE:
                self._flush_stdin()
            if events & (READABLE | CLOSED):
                self._read_output(fd)

        return on_events

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last replica closed
            data = b""
        if not data:
            self._close_output(fd, flush_log=True)
            return
        stream = self._outputs[fd]
        self._on_output(stream, data)  # first: attached clients get it even if the log fails
        self._log.write(stream, data)

    def _close_output(self, fd: int, *, flush_log: bool) -> None:
        self._loop.unwatch(fd)
        stream = self._outputs.pop(fd)
        if flush_log:
            self._log.flush_partial(stream)
        if fd != self.pty_fd:
            os.close(fd)

    def _flush_stdin(self) -> None:
        target = self._stdin_target()
        if target < 0:
            self._pending = b""
            return
        try:
            while self._pending:
                written = os.write(target, self._pending)
                self._pending = self._pending[written:]
        except BlockingIOError:
            self._want_writable(target, True)
            return
        except OSError:
            self._pending = b""  # the container closed its stdin
        self._want_writable(target, False)
        if self._close_stdin_when_flushed and self._stdin_fd >= 0:
            self._loop.unwatch(self._stdin_fd)
            os.close(self._stdin_fd)
            self._stdin_fd = -1

    def _want_writable(self, fd: int, wanted: bool) -> None:
        if fd == self.pty_fd:  # the pty master is watched for output already
            self._loop.set_mask(fd, READABLE | (WRITABLE if wanted else 0))
        elif wanted and not self._loop.watching(fd):
            self._loop.watch(fd, lambda events: self._flush_stdin(), WRITABLE)
        elif not wanted:
            self._loop.unwatch(fd)
