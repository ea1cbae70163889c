"""json-file logs: Docker's line format, 16 KiB partial lines, rotation, reading, following."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from carte.runtime.logs import (
    PARTIAL_LINE_LIMIT,
    JsonFileLog,
    LogFollower,
    parse_rfc3339,
    parse_time_filter,
    read_logs,
    rfc3339_nano,
)


def write_lines(path: Path, count: int, *, max_size: int, max_file: int) -> None:
    """Log "line 0" to "line COUNT-1" on stdout into `path`, rotated as given."""
    log = JsonFileLog(str(path), max_size=max_size, max_file=max_file)
    for n in range(count):
        log.write("stdout", f"line {n}\n".encode())
    log.close()


def test_lines_are_docker_json_file_entries(tmp_path: Path) -> None:
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write("stdout", b"hello\nwor")
    log.write("stderr", b"oops\n")
    log.write("stdout", b"ld\n\xff\n")
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "c.log").read_text().splitlines()]
    assert [(line["stream"], line["log"]) for line in lines] == [
        ("stdout", "hello\n"),
        ("stderr", "oops\n"),
        ("stdout", "world\n"),
        ("stdout", "\ufffd\n"),
    ]
    assert set(lines[0]) == {"log", "stream", "time"}
    assert lines[0]["time"].endswith("Z") and len(lines[0]["time"]) == 30
    assert abs(parse_rfc3339(lines[0]["time"]) - time.time_ns()) < 5 * 10**9


def test_unfinished_line_is_written_on_close_without_newline(tmp_path: Path) -> None:
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write("stdout", b"no newline")
    assert (tmp_path / "c.log").read_text() == ""
    log.close()
    assert [e.text for e in read_logs(str(tmp_path / "c.log"))] == ["no newline"]


def test_long_line_is_split_into_16k_partials(tmp_path: Path) -> None:
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write("stdout", b"x" * (PARTIAL_LINE_LIMIT * 2 + 5) + b"\n")
    log.close()
    texts = [e.text for e in read_logs(str(tmp_path / "c.log"))]
    assert [len(t) for t in texts] == [PARTIAL_LINE_LIMIT, PARTIAL_LINE_LIMIT, 6]
    assert texts[-1].endswith("\n") and not texts[0].endswith("\n")


def test_rotation_keeps_max_file_files_and_reader_spans_them(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    write_lines(path, 40, max_size=300, max_file=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.log", "c.log.1", "c.log.2"]
    assert all(p.stat().st_size <= 300 + 100 for p in tmp_path.iterdir())
    texts = [e.text for e in read_logs(str(path))]
    numbers = [int(t.split()[1]) for t in texts]
    assert numbers == list(range(numbers[0], 40)), "entries in order, newest kept"
    assert numbers[0] > 0, "oldest entries rotated away"
    assert [e.text for e in read_logs(str(path), tail=2)] == ["line 38\n", "line 39\n"]


def test_max_file_one_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    write_lines(path, 20, max_size=200, max_file=1)
    assert [p.name for p in tmp_path.iterdir()] == ["c.log"]
    assert path.stat().st_size < 200


def test_since_and_until_filter_by_time(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    entries = [
        {"log": f"{n}\n", "stream": "stdout", "time": f"2026-01-01T00:00:0{n}.5Z"} for n in range(5)
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    since = parse_rfc3339("2026-01-01T00:00:01Z")
    until = parse_rfc3339("2026-01-01T01:00:03.5+01:00")
    assert [e.text for e in read_logs(str(path), since=since, until=until)] == ["1\n", "2\n"]


def test_time_round_trips_and_bad_time_is_one_line_error() -> None:
    now = time.time_ns()
    assert parse_rfc3339(rfc3339_nano(now)) == now
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        parse_rfc3339("yesterday")


def test_follower_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    follower = LogFollower(str(path))  # log does not exist yet
    assert follower.backlog() == []
    log = JsonFileLog(str(path), max_size=250, max_file=2)
    seen: list[str] = []
    for n in range(30):
        log.write("stdout", f"line {n}\n".encode())
        if n % 4 == 0:
            seen.extend(e.text for e in follower.poll())
    seen.extend(e.text for e in follower.poll())
    log.close()
    follower.close()
    assert seen == [f"line {n}\n" for n in range(30)]


def test_follower_continues_after_backlog_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = JsonFileLog(str(path), max_size=150, max_file=1)
    log.write("stdout", b"a\n")
    follower = LogFollower(str(path))
    assert [e.text for e in follower.backlog()] == ["a\n"]
    assert follower.poll() == []
    log.write("stderr", b"b\n")
    assert [(e.stream, e.text) for e in follower.poll()] == [("stderr", "b\n")]
    for n in range(5):
        log.write("stdout", f"{n}\n".encode())  # crosses 150 bytes: truncated
    assert [e.text for e in follower.poll()][-1] == "4\n"
    log.close()
    follower.close()


def test_since_and_until_take_docker_forms() -> None:
    now = parse_rfc3339("2026-11-28T22:00:00Z")
    assert parse_time_filter("2026-11-28T21:00:00Z", now) == now - 3600 * 10**9
    assert parse_time_filter("1h30m", now) == now - 5400 * 10**9
    assert parse_time_filter("2.5s", now) == now - 2_500_000_000
    assert parse_time_filter("500ms", now) == now - 500_000_000
    assert parse_time_filter("1700000000", now) == 1_700_000_000 * 10**9
    assert parse_time_filter("1700000000.25", now) == 1_700_000_000_250_000_000
    for bad in ("10q", "yesterday", "1h3", ""):
        with pytest.raises(ValueError, match="a duration"):
            parse_time_filter(bad, now)
