"""The logs of a service's replicas, merged: `carte service logs`, `carte compose logs`,
`carte logs SERVICE` and `carte compose up` in the foreground.

Each replica's log is read by its own thread (one HTTP stream each) into one queue. Without
follow the lines are printed sorted by time once every stream ended; with follow they are
printed as they come, and the replica list is read again every second so that replicas that
start later (a scale-up, a replacement, a rollout) are followed too. Each line is prefixed by
its replica's label, padded to the longest, coloured on a terminal as Compose does.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from urllib.parse import quote, urlencode

from carte.cli.transport import ApiError

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from carte.cli.commands import Session

    Row = dict[str, Any]

# Replica prefixes, cycled as Compose does (ANSI foreground colours).
_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
_POLL_SECONDS = 1.0


class LogOptions:
    """How to show the lines: `tail` is "all" or a count of lines from the end of each log
    (replicas found later while following are shown whole, so none of their lines is lost);
    with `until_all_exit`, following ends once every replica's stream ended and no new replica
    came (Compose's attached `up`); else only when the replicas can no longer be listed (the
    service was removed) or on Ctrl-C."""

    def __init__(
        self,
        *,
        follow: bool,
        tail: str = "all",
        timestamps: bool = False,
        prefix: bool = True,
        colour: bool = False,
        until_all_exit: bool = False,
        window: dict[str, str] | None = None,
        stop_on_exit: bool = False,
    ) -> None:
        self.follow = follow
        self.stop_on_exit = stop_on_exit  # following ends when the first stream ends
        self.exits: list[tuple[Row, int]] = []  # with stop_on_exit: (replica, exit code)
        self.window = window or {}  # the logs API's since/until (Unix seconds), when given
        self.tail = tail
        self.timestamps = timestamps
        self.prefix = prefix
        self.colour = colour and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        self.until_all_exit = until_all_exit


def bad_tail(tail: str) -> str | None:
    """The one-line error for a --tail that is neither a count nor "all", else None."""
    if tail == "all" or tail.isdigit():
        return None
    return f'invalid --tail "{tail}": use a number of lines or "all"'


def show_replica_logs(
    session: Session,
    replicas: Callable[[], list[Row]],
    label: Callable[[Row], str],
    options: LogOptions,
) -> int:
    """Print the logs of the rows `replicas()` lists (each with a container_id), each line
    prefixed by `label(row)`; 0 when done or interrupted with Ctrl-C. An ApiError of the first
    listing propagates; a later one (the service is gone) ends the following."""
    reader = _Reader(session, label, options)
    reader.add(replicas(), options.tail)
    try:
        if not options.follow:
            held = reader.drain()
            for name, item in sorted(held, key=lambda pair: str(pair[1].get("time", ""))):
                reader.write(name, item)
            return 0
        next_poll = time.monotonic() + _POLL_SECONDS
        while True:
            got = reader.next(timeout=max(0.0, next_poll - time.monotonic()))
            if got is not None:
                reader.write(*got)
                continue
            if options.stop_on_exit and reader.ended:
                return 0
            ended = options.until_all_exit and not reader.open
            if time.monotonic() < next_poll and not ended:
                continue
            next_poll = time.monotonic() + _POLL_SECONDS
            try:
                added = reader.add(replicas(), "all")
            except ApiError:
                return 0
            if ended and not added:
                return 0
    except KeyboardInterrupt:
        return 0


class _Reader:
    """The reading threads, their queue, and the prefixes of the replicas seen so far."""

    def __init__(self, session: Session, label: Callable[[Row], str], options: LogOptions) -> None:
        self.session = session
        self.label = label
        self.options = options
        self.lines: queue.Queue[tuple[str, dict[str, Any]] | str] = queue.Queue()
        self.labels: dict[str, str] = {}  # container id -> label
        self.open = 0
        self.ended = 0  # streams that ended (their replica stopped)

    def add(self, rows: list[Row], tail: str) -> int:
        """Start reading each row not read yet; how many were new."""
        new = [row for row in rows if row["container_id"] not in self.labels]
        for row in new:
            self.labels[row["container_id"]] = self.label(row)
            self.open += 1
            threading.Thread(target=self._read, args=(row, tail), daemon=True).start()
        return len(new)

    def _read(self, row: Row, tail: str) -> None:
        query = {"follow": "1" if self.options.follow else "0", **self.options.window}
        if self.options.stop_on_exit:
            query["until_exit"] = "1"  # the stream ends with the exit code
        if tail != "all":
            query["tail"] = tail
        name = self.labels[row["container_id"]]
        path = f"/v1/containers/{quote(row['container_id'], safe='')}/logs?{urlencode(query)}"
        try:
            stream = self.session.client.open("GET", path)
            try:
                for line in stream.lines():
                    item = json.loads(line)
                    if "log" in item:
                        self.lines.put((name, item))
                    elif "exit" in item:
                        code = int(item["exit"].get("status_code", 0))
                        self.options.exits.append((row, code))
            finally:
                stream.close()
        except (ApiError, OSError, ValueError):
            pass  # the replica went away while being read: its lines so far were shown
        finally:
            self.lines.put(name)

    def next(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next line, or None when none came within `timeout` (a stream's end counts)."""
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(got, str):
            self.open -= 1
            self.ended += 1
            return None
        return got

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Every line until every stream ended."""
        held = []
        while self.open:
            got = self.lines.get()
            if isinstance(got, str):
                self.open -= 1
            else:
                held.append(got)
        return held

    def write(self, name: str, item: dict[str, Any]) -> None:
        text = str(item["log"])
        stamp = f"{item.get('time', '')} " if self.options.timestamps else ""
        target = sys.stderr if item.get("stream") == "stderr" else sys.stdout
        ending = "" if text.endswith("\n") else "\n"
        target.write(f"{self._prefix(name)}{stamp}{text}{ending}")
        target.flush()

    def _prefix(self, name: str) -> str:
        if not self.options.prefix:
            return ""
        width = max(len(label) for label in self.labels.values())
        prefix = f"{name:<{width}} | "
        if self.options.colour:
            number = list(self.labels.values()).index(name)
            prefix = f"\x1b[{_COLOURS[number % len(_COLOURS)]}m{prefix}\x1b[0m"
        return prefix
