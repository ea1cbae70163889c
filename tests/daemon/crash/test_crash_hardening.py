"""What a SIGKILLed daemon leaves is finished or undone by the next one (issue 11, the crash
harness's findings), each reproduced here by writing the state the kill left:

- `create` writes ROOT/containers/<id> before the container's record: a kill in between left
  a directory that no record names, forever (the harness: "container directory ... has no
  record"). The next daemon removes it, and only it.
- `apply` makes the stack's networks before it stores the stack: a kill in between left
  `<stack>_default` owned by no listed stack, and `stack rm` answered "not found". The next
  daemon removes such networks, and `stack rm` removes them too.
- a kill during a build or a scale left a service under its count for more than 30 s after
  the restart: replicas (and build steps) that died with the daemon were settled at start
  waiting 10 s each for the network handler, and the stacks handler starts after the
  containers handler. A service whose replicas all died while the daemon was away is back to
  its count within seconds of the restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from support.containers import ok, wait_for
from support.daemon import Daemon
from support.leftovers import cgroup_dirs
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.83.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
STACK = """\
services:
  web:
    image: busybox
    command: ["sleep", "100000"]
    deploy:
      replicas: {replicas}
"""


restartable, carte = daemon_fixtures("restartable", config=CONFIG, stacks=True, networks=True)


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
    stack.write_text(STACK.format(replicas=0))
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


def running_of(carte: Daemon, stack: str) -> tuple[int, int]:
    listed = json.loads(ok(carte.client("--format", "json", "service", "ls")))
    [service] = [s for s in listed if s["stack"] == stack]
    return int(service["running"]), int(service["desired"])


def test_a_service_whose_replicas_died_with_the_daemon_is_back_at_once(
    carte: Daemon, tmp_path: Path
) -> None:
    stack = tmp_path / "compose.yaml"
    stack.write_text(STACK.format(replicas=3))
    ok(carte.client("apply", "-f", str(stack), "-n", "back"))
    wait_for(lambda: running_of(carte, "back") == (3, 3), 30, "3 replicas")
    for _ in range(2):  # more dead containers on the stack's network, as killed build steps
        ok(carte.client("run", "-d", "--network", "back_default", "busybox", "sleep", "100000"))
    assert carte.process is not None
    carte.process.kill()
    carte.process.wait()
    for directory in (carte.root / "containers").iterdir():  # every container dies
        for cgroup in cgroup_dirs(directory.name):
            for pid in (cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(int(pid), signal.SIGKILL)
    started = time.monotonic()
    carte.start()
    wait_for(lambda: running_of(carte, "back") == (3, 3), 20, "3 replicas again")
    print(f"back to 3 replicas {time.monotonic() - started:.1f} s after the restart began")
