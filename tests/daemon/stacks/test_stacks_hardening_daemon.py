"""Hostile Compose files through `carte apply` on a real daemon (issue 11, item 3): an alias
bomb and deep nesting are refused in one line naming the file, the daemon keeps answering and
no stack is recorded."""

from __future__ import annotations

import time
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from test_stacks_hardening import alias_bomb, deep


def test_apply_refuses_a_bomb_and_deep_nesting_and_the_daemon_keeps_answering(
    carte: Daemon, tmp_path: Path
) -> None:
    for name, text in (("bomb.yaml", alias_bomb(10)), ("deep.yaml", deep(10_000, "[", "]"))):
        path = tmp_path / name
        path.write_text(text)
        started = time.monotonic()
        done = carte.client("apply", "-f", str(path), "-n", "hostile", timeout=20)
        took = time.monotonic() - started
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0], done.stderr
        assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
        assert took < 5, f"apply of {name} took {took:.1f}s"
        ok(carte.client("version"))
    assert "hostile" not in ok(carte.client("stack", "ls"))
