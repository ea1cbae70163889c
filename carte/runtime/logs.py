"""Container logs in Docker's json-file format: a writer with rotation, a reader, a follower.

One JSON object per line, as Docker writes it:
``{"log":"text\\n","stream":"stdout","time":"2026-11-28T22:04:25.123456789Z"}``.
A line longer than 16 KiB is split into entries of 16 KiB without a trailing newline (Docker's
partial messages); the last piece carries the newline. Rotation by `max_size` bytes keeps
`max_file` files: LOG (newest), LOG.1, ... LOG.<max_file-1> (oldest); `max_file` 1 truncates LOG.

The writer runs inside the shim, whose memory budget is tight, so this module imports only
`os` and C modules at import time; the reader's imports are taken when it is first used.

Following (`logs -f`) is a polling primitive, so a trio handler needs no thread: ::

    follower = LogFollower(path)
    for entry in follower.backlog(tail=10):     # history, rotated files included
        send(entry)
    while True:                                 # new entries, across rotations
        for entry in follower.poll():
            send(entry)
        await trio.sleep(0.1)                   # or stop when the container has exited
    follower.close()

Rotation is noticed by inode: when LOG names a new file, the follower finishes the old file
(still open) and continues at the start of the new one; a truncated LOG (max_file 1) is re-read
from its start.
"""

from __future__ import annotations

import os
import time
from _json import encode_basestring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

PARTIAL_LINE_LIMIT = 16 * 1024
STREAMS = ("stdout", "stderr")


def rfc3339_nano(time_ns: int) -> str:
    """UTC time as RFC 3339 with nine fractional digits: 2026-11-28T22:04:25.000000001Z."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{nanos:09d}Z"
    )


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (any fraction, Z or +hh:mm offset).

    Raises ValueError naming the text when it is not such a time.
    """
    import calendar

    try:
        date, _, clock = text.replace(" ", "T").partition("T")
        year, month, day = (int(part) for part in date.split("-"))
        offset_s = 0
        if clock.endswith(("Z", "z")):
            clock = clock[:-1]
        else:
            for sign in ("+", "-"):
                if sign in clock:
                    clock, _, offset = clock.rpartition(sign)
                    hours, _, minutes = offset.partition(":")
                    offset_s = (int(hours) * 3600 + int(minutes or 0) * 60) * (
                        1 if sign == "+" else -1
                    )
                    break
        hms, _, fraction = clock.partition(".")
        hour, minute, second = (int(part) for part in hms.split(":"))
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except ValueError:
        raise ValueError(
            f"time {text!r} is not an RFC 3339 time; use e.g. 2026-11-28T22:04:25Z"
        ) from None
    return (seconds - offset_s) * 1_000_000_000 + nanos


_DURATION_UNITS = {
    "ns": 1,
    "us": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def parse_time_filter(text: str, now_ns: int) -> int:
    """A `logs --since/--until` value as nanoseconds since the epoch, as Docker takes them:
    an RFC 3339 time, a Unix timestamp ("1700000000" or "1700000000.5"), or a duration back
    from `now_ns` ("10m", "1h30m", "2.5s").

    Raises ValueError with one line naming the value and the accepted forms.
    """
    value = text.strip()
    try:
        if value.replace(".", "", 1).isdigit():
            whole, _, fraction = value.partition(".")
            return int(whole) * 10**9 + int((fraction + "000000000")[:9] or 0)
        if value[:1].isdigit() and value[-1:].isalpha() and "-" not in value:
            return now_ns - _parse_duration(value)
        return parse_rfc3339(value)
    except ValueError:
        raise ValueError(
            f"time {text!r} is not understood; give an RFC 3339 time (2026-11-28T22:04:25Z), "
            "a Unix timestamp (1700000000) or a duration (10m, 1h30m)"
        ) from None


def _parse_duration(text: str) -> int:
    total, number = 0, ""
    position = 0
    while position < len(text):
        char = text[position]
        if char.isdigit() or char == ".":
            number += char
            position += 1
            continue
        unit = (
            text[position : position + 2]
            if text[position : position + 2] in _DURATION_UNITS
            else char
        )
        if unit not in _DURATION_UNITS or not number:
            raise ValueError(text)
        total += int(float(number) * _DURATION_UNITS[unit])
        number = ""
        position += len(unit)
    if number:
        raise ValueError(text)
    return total


class JsonFileLog:
    """Appends container output to a json-file log, rotating by size.

    `write` takes raw bytes as read from the container and emits one entry per complete line;
    an unfinished line waits for its end (or for 16 KiB) and is emitted by `close`.
    Write errors (disk full) raise OSError from `write`/`close`; the entry being written is lost.
    `max_size` 0 means no rotation.
    """

    def __init__(self, path: str, *, max_size: int = 0, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._pending: dict[str, bytes] = {}
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        """Log `data` read from `stream` ("stdout" or "stderr")."""
        buffer = self._pending.pop(stream, b"") + data
        start = 0
        while True:
            end = buffer.find(b"\n", start, start + PARTIAL_LINE_LIMIT)
            if end >= 0:
                self._emit(stream, buffer[start : end + 1])
                start = end + 1
            elif len(buffer) - start >= PARTIAL_LINE_LIMIT:
                self._emit(stream, buffer[start : start + PARTIAL_LINE_LIMIT])
                start += PARTIAL_LINE_LIMIT
            else:
                break
        if start < len(buffer):
            self._pending[stream] = buffer[start:]

    def flush_partial(self, stream: str) -> None:
        """Emit the unfinished line of `stream`, if any (its writer closed)."""
        rest = self._pending.pop(stream, b"")
        if rest:
            self._emit(stream, rest)

    def close(self) -> None:
        """Emit unfinished lines and close the file."""
        for stream in list(self._pending):
            self.flush_partial(stream)
        os.close(self._fd)

    def _emit(self, stream: str, chunk: bytes) -> None:
        line = (
            '{"log":'
            + encode_basestring(chunk.decode("utf-8", "replace"))
            + ',"stream":"'
            + stream
            + '","time":"'
            + rfc3339_nano(time.time_ns())
            + '"}\n'
        ).encode()
        os.write(self._fd, line)
        self._size += len(line)
        if self.max_size > 0 and self._size >= self.max_size:
            self._rotate()

    def _rotate(self) -> None:
        if self.max_file == 1:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return
        for index in range(self.max_file - 1, 0, -1):
            older = f"{self.path}.{index - 1}" if index > 1 else self.path
            try:
                os.replace(older, f"{self.path}.{index}")
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_TRUNC, 0o640
        )
        self._size = 0


class LogEntry:
    """One decoded log entry: `stream`, `text` (with its newline unless partial), `time`."""

    __slots__ = ("stream", "text", "time", "time_ns")

    def __init__(self, stream: str, text: str, time: str) -> None:
        self.stream = stream
        self.text = text
        self.time = time
        self.time_ns = parse_rfc3339(time)

    def __repr__(self) -> str:
        return f"LogEntry({self.stream!r}, {self.text!r}, {self.time!r})"


def _decode_lines(data: bytes) -> list[LogEntry]:
    import json

    entries = []
    for line in data.splitlines():
        try:
            raw = json.loads(line)
            entries.append(LogEntry(raw["stream"], raw["log"], raw["time"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line: skip it as Docker's reader does
    return entries


def _filter(entries: Iterable[LogEntry], since: int | None, until: int | None) -> list[LogEntry]:
    return [
        entry
        for entry in entries
        if (since is None or entry.time_ns >= since) and (until is None or entry.time_ns < until)
    ]


class LogFollower:
    """Reads a json-file log and then follows it across rotation, by polling.

    Opening a missing log is not an error: the follower waits for it to appear.
    `since`/`until` are nanoseconds since the epoch (see `parse_rfc3339`).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: int | None = None
        self._inode: int | None = None
        self._position = 0
        self._carry = b""
        self._open_current()

    def backlog(
        self, *, tail: int | None = None, since: int | None = None, until: int | None = None
    ) -> list[LogEntry]:
        """All entries so far, oldest first (rotated files too), the last `tail` of them."""
        entries: list[LogEntry] = []
        for rotated in self._rotated_files():
            try:
                with open(rotated, "rb") as file:
                    if os.fstat(file.fileno()).st_ino == self._inode:
                        continue  # rotated after we opened it: read below as the current file
                    entries.extend(_decode_lines(file.read()))
            except FileNotFoundError:
                continue
        entries.extend(self._read_new())
        entries = _filter(entries, since, until)
        if tail is not None:
            entries = entries[-tail:] if tail > 0 else []
        return entries

    def poll(self) -> list[LogEntry]:
        """Entries written since the last call; never blocks."""
        entries = self._read_new()
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return entries
        if current.st_ino != self._inode:
            entries.extend(self._read_new())  # what the writer added before it rotated
            self._close_file()
            self._open_current()
            entries.extend(self._read_new())
        elif self._file is not None and current.st_size < self._position:
            self._position = 0  # truncated in place (max_file 1)
            self._carry = b""
            entries.extend(self._read_new())
        return entries

    def close(self) -> None:
        self._close_file()

    def _rotated_files(self) -> list[str]:
        directory, name = os.path.split(self.path)
        indexes = []
        for candidate in os.listdir(directory or "."):
            suffix = candidate[len(name) + 1 :]
            if candidate.startswith(name + ".") and suffix.isdigit():
                indexes.append(int(suffix))
        return [f"{self.path}.{index}" for index in sorted(indexes, reverse=True)]

    def _open_current(self) -> None:
        try:
            self._file = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._file = None
            self._inode = None
            return
        self._inode = os.fstat(self._file).st_ino
        self._position = 0
        self._carry = b""

    def _close_file(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _read_new(self) -> list[LogEntry]:
        if self._file is None:
            return []
        chunks = [self._carry]
        while True:
            chunk = os.pread(self._file, 1 << 16, self._position)
            if not chunk:
                break
            chunks.append(chunk)
            self._position += len(chunk)
        data = b"".join(chunks)
        complete, _, self._carry = data.rpartition(b"\n")
        return _decode_lines(complete)


def read_logs(
    path: str, *, tail: int | None = None, since: int | None = None, until: int | None = None
) -> list[LogEntry]:
    """The entries of a json-file log and its rotated files, oldest first; [] if none exist."""
    follower = LogFollower(path)
    try:
        return follower.backlog(tail=tail, since=since, until=until)
    finally:
        follower.close()
