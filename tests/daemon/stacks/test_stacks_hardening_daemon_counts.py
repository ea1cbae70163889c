"""Counts through a real daemon (issue 11 items 1 and 16): `apply` and `service scale` to a
huge replica count are refused in one line with nothing stored; a daemon that finds such a
record in its store (written there while it was stopped) starts, logs why it refuses that
service and serves the others, and a scale repairs it; an apply that changes only
autoscale settings is not reported `unchanged`."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon

HUGE = 99999999999999999999999
SLEEPER = """\
services:
  web:
    image: busybox
    command: ["sleep", "1000000"]
    deploy:
      replicas: {replicas}
"""


def apply(carte: Daemon, tmp_path: Path, text: str, name: str = "counts") -> str:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    return ok(carte.client("apply", "-f", str(path), "-n", name))


def running(carte: Daemon, service: str) -> int:
    rows = json.loads(ok(carte.client("--format", "json", "service", "ps", service)))
    return sum(
        1 for r in rows if r.get("state", r.get("status", "")).lower().startswith(("run", "up"))
    )


def wait_for_running(carte: Daemon, service: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running(carte, service) != count:
        assert time.monotonic() < deadline, f"{service}: not {count} running in {timeout}s"
        time.sleep(0.2)


def test_huge_counts_are_refused_before_anything_is_stored(carte: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(SLEEPER.format(replicas=HUGE))
    done = carte.client("apply", "-f", str(path), "-n", "huge")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "compose.yaml:6" in lines[0] and "ceiling" in lines[0], lines
    assert "huge" not in ok(carte.client("stack", "ls"))
    apply(carte, tmp_path, SLEEPER.format(replicas=1))
    done = carte.client("service", "scale", f"counts_web={HUGE}")
    assert done.returncode != 0 and "ceiling" in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    rows = json.loads(ok(carte.client("--format", "json", "service", "ls", "counts")))
    assert [int(r["desired"]) for r in rows] == [1], rows


def stopped_after_deploying(carte: Daemon, tmp_path: Path, stack: str) -> str:
    """Deploy `stack` (service web, 1 replica), stop the daemon once it runs; the key of the
    service's record in the daemon's state.db."""
    apply(carte, tmp_path, SLEEPER.format(replicas=1), stack)
    wait_for_running(carte, f"{stack}_web", 1, 30)
    carte.stop()
    return f"stacks/{stack}/services/web"


def test_impossible_stored_record_is_refused_not_fatal(carte: Daemon, tmp_path: Path) -> None:
    key = stopped_after_deploying(carte, tmp_path, "stored")
    with sqlite3.connect(carte.root / "state.db") as db:
        (value,) = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        record = json.loads(value)
        record["replicas"] = HUGE
        record["spec"]["deploy"]["replicas"] = HUGE
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (json.dumps(record).encode(), key))
    carte.start()
    time.sleep(6)  # more than one converge pass (5 s apart)
    assert carte.process is not None and carte.process.poll() is None, carte.log()[-2000:]
    log = carte.log()
    assert "service stored_web refused" in log and "ceiling of 1000" in log, log[-2000:]
    assert log.count("service stored_web refused") == 1, "logged at every pass"
    ok(carte.client("version"))
    assert running(carte, "stored_web") == 1, "the refused service's replica was touched"
    ok(carte.client("service", "scale", "stored_web=2"))
    wait_for_running(carte, "stored_web", 2, 30)


def test_autoscale_only_change_is_not_unchanged(carte: Daemon, tmp_path: Path) -> None:
    text = SLEEPER.format(replicas=1) + "    x-carte:\n      autoscale: {{min: 1, max: {top}}}\n"
    apply(carte, tmp_path, text.format(top=2), "auto")
    second = apply(carte, tmp_path, text.format(top=3), "auto")
    assert "unchanged" not in second and "x-carte.autoscale" in second, second
    third = apply(carte, tmp_path, text.format(top=3), "auto")
    assert "unchanged" in third, third


def test_unreadable_stored_record_is_refused_not_fatal(carte: Daemon, tmp_path: Path) -> None:
    key = stopped_after_deploying(carte, tmp_path, "garbled")
    with sqlite3.connect(carte.root / "state.db") as db:
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (b'{"replicas": "lots"}', key))
    carte.start()
    log = carte.log()
    assert "refused: stored record stacks/garbled/services/web cannot be read" in log, log[-2000:]
    ok(carte.client("service", "ls"))
    apply(carte, tmp_path, SLEEPER.format(replicas=2), "garbled")  # the fix the log names
    wait_for_running(carte, "garbled_web", 2, 30)
