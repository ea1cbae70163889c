"""Progress the client draws on stderr for `carte load` and `carte build`, as Docker's client
draws it: redrawn in place on a terminal, plain lines when stderr is not one (a log, a pipe,
CI), nothing with `-q`.

`UploadProgress` follows the bytes of one upload (`carte load`'s archive): a bar on a
terminal and nothing otherwise, as `docker load` (a log or a pipe keeps only the result, and
an error stays one line). `BuildView` turns the build's progress lines
(BuildKit's plain format: `#3 [2/5] RUN ...`, `#3 <output>`, `#3 CACHED`, `#3 DONE 1.2s`) into
BuildKit's terminal view: a `[+] Building 3.4s (4/7)` header, one row per step with its time,
and the last lines of the steps still running; the clock ticks between lines.
"""

from __future__ import annotations

import io
import re
import shutil
import threading
import time
from collections import deque

from carte.cli.commands.registry import human_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, TextIO

_BAR = 30
_REDRAW = 0.1  # seconds between redraws of a bar
_STEP = re.compile(r"#(\d+) (.*)")
_TAIL = 6  # output lines shown under a running step, as BuildKit shows


def _bar(done: int, total: int) -> str:
    filled = min(_BAR, _BAR * done // total) if total else 0
    arrow = ">" if 0 < filled < _BAR else ""
    return "[" + ("=" * filled + arrow).ljust(_BAR)[:_BAR] + "]"


class UploadProgress(io.RawIOBase):
    """A readable wrapper of `source` that reports how much was read to `stream`, `total`
    bytes in all (None: unknown, as for stdin). `finish()` ends the bar's line."""

    def __init__(self, source: BinaryIO, stream: TextIO, label: str, total: int | None) -> None:
        self.source = source
        self.stream = stream
        self.label = label
        self.total = total
        self.done = 0
        self.tty = stream.isatty()
        self._drawn = 0.0
        self._finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        self.done += len(data)
        if data:
            self._report(final=False)
        else:
            self.finish()
        return len(data)

    def finish(self) -> None:
        """The upload ended (at the end of the source, or cut short): the bar where it got
        to, its line ended. Once; later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        self._report(final=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _report(self, final: bool) -> None:
        now = time.monotonic()
        if not self.tty or not (final or now - self._drawn >= _REDRAW):
            return
        self._drawn = now
        sizes = human_size(self.done) + (f"/{human_size(self.total)}" if self.total else "")
        bar = _bar(self.done, self.total) + " " if self.total else ""
        self.stream.write(f"\r\x1b[2K{self.label} {bar}{sizes}")
        self.stream.flush()


class _Step:
    def __init__(self, title: str) -> None:
        self.title = title
        self.state = "running"  # running, CACHED, DONE, ERROR
        self.started = time.monotonic()
        self.seconds = 0.0
        self.tail: deque[str] = deque(maxlen=_TAIL)

    def end(self, state: str) -> None:
        """Ended as `state` (DONE, CACHED, ERROR) unless it ended before."""
        if self.state == "running":
            self.state = state
            self.seconds = time.monotonic() - self.started
            if state != "ERROR":
                self.tail.clear()


class BuildView:
    """BuildKit's terminal view of a build, redrawn on `stream` (a terminal). Use it as a
    context manager: the clock ticks while it is open; leaving it draws the last frame (with
    FINISHED unless `failed()` was called) and the notes the build printed beside its steps."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.steps: dict[str, _Step] = {}
        self.notes: list[str] = []
        self.started = time.monotonic()
        self.ok = True
        self._drawn = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self) -> BuildView:
        threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self._stop.set()
        self.ok = self.ok and kind is None
        with self._lock:
            self._draw(final=True)
            for note in self.notes:
                self.stream.write(note + "\n")
            self.stream.flush()

    def failed(self) -> None:
        self.ok = False

    def feed(self, line: str) -> None:
        """One progress line of the build."""
        match = _STEP.fullmatch(line)
        with self._lock:
            if match is None:
                self.notes.append(line)
                return
            number, text = match.groups()
            step = self.steps.get(number)
            if step is None:  # steps run one after the other: the last one ended
                for earlier in self.steps.values():
                    earlier.end("DONE")
                self.steps[number] = _Step(text)
            elif text == "CACHED" or text.startswith("DONE "):
                step.end(text.split()[0])
            else:
                step.tail.append(text)
            self._draw(final=False)

    def _tick(self) -> None:
        while not self._stop.wait(_REDRAW * 2):
            with self._lock:
                if not self._stop.is_set():
                    self._draw(final=False)

    def _draw(self, final: bool) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)
        now = time.monotonic()
        end = " FINISHED" if final and self.ok else ""
        for step in self.steps.values():
            if final:
                step.end("DONE" if self.ok else "ERROR")
        done = sum(s.state != "running" for s in self.steps.values())
        rows = [f"[+] Building {now - self.started:.1f}s ({done}/{len(self.steps)}){end}"]
        for step in self.steps.values():
            running = step.state == "running"
            seconds = now - step.started if running else step.seconds
            cached = "CACHED " if step.state == "CACHED" else ""
            error = "ERROR " if step.state == "ERROR" else ""
            timing = f" {seconds:.1f}s"
            title = f" => {error}{cached}{step.title}"[: width - len(timing)]
            rows.append(title.ljust(width - len(timing)) + timing)
            if running or step.state == "ERROR":
                rows += [f" => => # {text}"[:width] for text in step.tail]
        up = f"\x1b[{self._drawn}A" if self._drawn else ""
        self.stream.write(up + "".join(f"\r\x1b[2K{row}\n" for row in rows) + "\x1b[J")
        self.stream.flush()
        self._drawn = len(rows)
