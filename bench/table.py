"""Regenerate the README's benchmark table from `python -m bench --json` output.

    .venv/bin/python -m bench.table results.json [more.json ...] [--readme README.md] [--print]

Rows come from the JSON files in order; a later file's row replaces an earlier one with the same
benchmark and measure (so a separate `density` run can be merged in). The table, with each
file's date and load average, replaces what lies between the marker comments
`<!-- bench-table:start -->` and `<!-- bench-table:end -->` in the README; nothing else in
the file is touched. `--print` writes the table to stdout instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.results import format_value

START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(reports: list[tuple[str, dict[str, Any]]]) -> str:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for _, report in reports:
        for row in report["results"]:
            rows[(row["bench"], row["measure"])] = row
    lines = []
    for name, report in reports:
        machine = report.get("machine", {})
        load = report.get("load_before", []), report.get("load_after", [])
        lines.append(
            f"From `{name}`: {report['date']}, {machine.get('cpus')} CPUs, Python "
            f"{machine.get('python')}, load average {' '.join(map(str, load[0]))} before and "
            f"{' '.join(map(str, load[1]))} after ({', '.join(report['benches'])})."
        )
        for bench, failure in report.get("failures", {}).items():
            lines.append(f"`{bench}` failed in that run: {_cell(failure)}")
    lines += ["", "| measure (bench) | Carte | other | ratio | target |", "|---|---|---|---|---|"]
    for row in rows.values():
        unit = row["unit"]
        other = format_value(row["other"], unit)
        if row["other_name"]:
            other = f"{other} ({row['other_name']})"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
        target = row["target"]
        if row["met"] is not None:
            target = f"{target}: {'met' if row['met'] else 'NOT met'}"
        runs = f", {row['runs']} runs" if row["runs"] > 1 else ""
        measure = f"{row['measure']} ({row['bench']}{runs})"
        if row["note"]:
            measure += f"; {row['note']}"
        lines.append(
            f"| {_cell(measure)} | {format_value(row['carte'], unit)} | {_cell(other)} "
            f"| {ratio} | {target} |"
        )
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, table: str) -> str:
    """`text` with the lines between the markers replaced; ValueError when they are missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {START} ... {END} markers")
    head = text[: start + len(START)]
    return f"{head}\n{table}{text[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.table", description=__doc__.split("\n")[0]
    )
    parser.add_argument("results", nargs="+", type=Path, help="JSON written by python -m bench")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--print", action="store_true", help="print the table, change nothing")
    args = parser.parse_args(argv)
    reports = []
    for path in args.results:
        try:
            reports.append((path.name, json.loads(path.read_text())))
        except (OSError, ValueError) as error:
            print(f"bench.table: cannot read {path}: {error}", file=sys.stderr)
            return 1
    try:
        table = render(reports)
    except (KeyError, TypeError) as error:
        print(f"bench.table: {args.results} lack a field ({error}); rerun python -m bench --json",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.print:
        sys.stdout.write(table)
        return 0
    try:
        updated = replace_between_markers(args.readme.read_text(), table)
    except ValueError as error:
        print(f"bench.table: {args.readme}: {error}; add them around the table", file=sys.stderr)
        return 1
    args.readme.write_text(updated)
    print(f"bench.table: {args.readme} updated ({len(table.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
