"""What a SIGKILLed daemon leaves is finished or undone by the next one (issue 11, the crash
harness's findings), each reproduced here by writing the state the kill left:

- `create` writes ROOT/containers/<id> before the container's record: a kill in between left
  a directory that no record names, forever (the harness: "container directory ... has no
  record"). The next daemon removes it, and only it.
- `apply` makes the stack's networks before it stores the stack: a kill in between left
  `<stack>_default` owned by no listed stack, and `stack rm` answered "not found". The next
  daemon removes such networks, and `stack rm` removes them too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

CONFIG = 'network:\n  pools: ["10.83.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
STACK = """\
services:
  web:
    image: busybox
    command: ["sleep", "100000"]
    deploy:
      replicas: 0
"""


@pytest.fixture(scope="module")
def restartable(busybox_tar: Path) -> Iterator[ModuleDaemon]:
    with ModuleDaemon(busybox_tar, config=CONFIG, stacks=True, networks=True) as module:
        yield module


@pytest.fixture
def carte(restartable: ModuleDaemon) -> Iterator[Daemon]:
    with restartable.test() as daemon:
        yield daemon


def network_names(carte: Daemon) -> set[str]:
    listed = json.loads(ok(carte.client("--format", "json", "network", "ls")))
    return {network["name"] for network in listed}


def test_a_container_directory_without_a_record_is_removed_at_start(carte: Daemon) -> None:
    ok(carte.client("create", "--name", "kept", "busybox", "true"))
    kept = ok(carte.client("ps", "-aq", "--no-trunc")).strip()
    carte.stop()
    orphan = carte.root / "containers" / ("ab" * 32)  # as a kill before the record left it
    (orphan / "upper").mkdir(parents=True)
    (orphan / "config.json").write_text("{}")
    unrelated = carte.root / "containers" / "not-a-container"
    unrelated.mkdir()
    carte.start()
    assert not orphan.exists()
    assert (carte.root / "containers" / kept / "config.json").is_file()
    assert unrelated.is_dir()  # only what is named like a container is the daemon's
    assert ok(carte.client("start", "-a", "kept")) == ""
    assert "removed container directory " + "ab" * 32 in carte.log()


def test_a_stack_network_of_no_stack_goes_at_start_and_with_stack_rm(
    carte: Daemon, tmp_path: Path
) -> None:
    # as a kill between an apply's network and its stack record left them
    ok(carte.client("network", "create", "-l", "com.carte.stack=ghost", "ghost_default"))
    ok(carte.client("network", "create", "-l", "com.carte.stack=cut", "cut_default"))
    stack = tmp_path / "compose.yaml"
    stack.write_text(STACK)
    ok(carte.client("apply", "-f", str(stack), "-n", "whole"))
    ok(carte.client("network", "create", "plain"))

    ok(carte.client("stack", "rm", "cut"))  # was: stack "cut" not found
    assert "cut_default" not in network_names(carte)
    assert carte.client("stack", "rm", "cut").returncode != 0  # nothing of it is left

    carte.stop()
    carte.start()
    wait_for(lambda: "ghost_default" not in network_names(carte), 10, "ghost_default removed")
    assert {"whole_default", "plain"} <= network_names(carte)
    assert "network ghost_default" in carte.log()
