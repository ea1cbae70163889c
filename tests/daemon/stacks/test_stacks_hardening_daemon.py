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


TWO_NETWORKS = """\
services:
  web:
    image: busybox
    command: ["sleep", "1000"]
    networks: [front, back]
networks:
  front:
    ipam:
      config: [{subnet: 10.231.7.0/24}]
  back:
    ipam:
      config: [{subnet: 10.231.7.0/24}]
"""


def test_apply_refused_at_its_second_network_leaves_no_network_behind(
    carte: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(TWO_NETWORKS)
    before = set(ok(carte.client("network", "ls", "--format", "{{.ID}}")).split())
    done = carte.client("apply", "-f", str(path), "-n", "halfnet")
    assert done.returncode != 0 and "10.231.7.0/24" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    after = ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()
    assert not [n for n in after if n.startswith("halfnet_")], after
    assert set(ok(carte.client("network", "ls", "--format", "{{.ID}}")).split()) == before
    assert "halfnet" not in ok(carte.client("stack", "ls"))
