"""How the client prints: aligned tables for people, JSON for scripts (`--format json`)."""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TextIO


class Output:
    """Prints rows as a table or as JSON, depending on the chosen format."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        self.format = fmt
        self.stream = stream or sys.stdout

    @property
    def json(self) -> bool:
        return self.format == "json"

    def data(self, value: Any) -> None:
        """Print a value as indented JSON."""
        self.stream.write(json.dumps(value, indent=2, sort_keys=False) + "\n")

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Print rows under upper-case headers, columns padded to the widest cell."""
        cells = [[str(h).upper() for h in headers], *[[str(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for row in cells:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            self.stream.write("   ".join(padded).rstrip() + "\n")

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """Print ``Name: value`` lines, names aligned."""
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            self.stream.write(f"{name + ':':<{width + 1}} {value}\n")

    def pruned(self, result: dict[str, Any], title: str, *, space: bool = True) -> None:
        """A prune's result: as is in JSON; else ``Deleted <title>:`` over one name a line
        (when any went) and, with `space`, the bytes reclaimed (Docker's wording)."""
        if self.json:
            self.data(result)
            return
        if result["deleted"]:
            self.line(f"Deleted {title}:")
            for name in result["deleted"]:
                self.line(name)
        if space:
            self.line(f"Total reclaimed space: {result.get('space_reclaimed', 0)}B")

    def listing(
        self,
        items: list[dict[str, Any]],
        headers: Sequence[str],
        row: Callable[[dict[str, Any]], Sequence[Any]],
        *,
        quiet_key: str | None = None,
    ) -> None:
        """A list command's answer: the items as JSON; with `quiet_key` (``-q``) that field of
        each item, one a line; else a table of ``row(item)`` under `headers`."""
        if self.json:
            self.data(items)
        elif quiet_key is not None:
            for item in items:
                self.line(str(item[quiet_key]))
        else:
            self.table(headers, [row(item) for item in items])
