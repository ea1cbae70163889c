"""`carte service logs` as `docker service logs` users type it, against a real daemon: every
replica's lines, prefixed `STACK_SERVICE.N@NODE |`, and -f picks up replicas started later."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from support.containers import ok, wait_for
from support.daemon import Daemon

FILE = """\
services:
  talk:
    image: busybox
    command: ["sh", "-c", "echo first from $$(hostname); sleep 1; echo second; exec sleep 3600"]
    deploy:
      replicas: 2
"""


def test_service_logs_prefix_tail_and_follow_new_replicas(carte: Daemon, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(FILE)
    ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "chat"))
    node = socket.gethostname()

    def both_said_second() -> bool:
        return ok(carte.client("service", "logs", "chat_talk")).count("| second") == 2

    wait_for(both_said_second, 60, "both replicas' second line")
    lines = ok(carte.client("service", "logs", "chat_talk")).splitlines()
    assert len(lines) == 4, lines
    prefixes = {line.split(" | ")[0].rstrip() for line in lines}
    assert prefixes == {f"chat_talk.1@{node}", f"chat_talk.2@{node}"}
    assert all(line.split(" | ")[1].startswith(("first from ", "second")) for line in lines)
    tailed = ok(carte.client("service", "logs", "--tail", "1", "-t", "talk")).splitlines()
    assert len(tailed) == 2 and all(" | 20" in line and line.endswith(" second") for line in tailed)
    bad = carte.client("service", "logs", "--tail", "some", "chat_talk")
    assert (bad.returncode, bad.stderr.count("\n")) == (1, 1) and "--tail" in bad.stderr

    follow = subprocess.Popen(
        [*carte.command, "--host", f"unix://{carte.socket}", "service", "logs", "-f", "talk"],
        stdout=subprocess.PIPE,
        text=True,
        env=carte.env,
    )
    try:
        assert follow.stdout is not None
        seen = [follow.stdout.readline() for _ in range(4)]
        assert sum("| second" in line for line in seen) == 2, seen
        ok(carte.client("service", "scale", "chat_talk=3"))
        later = [follow.stdout.readline() for _ in range(2)]
        assert later[0].startswith(f"chat_talk.3@{node} | first from "), later
        assert later[1].startswith(f"chat_talk.3@{node} | second"), later
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()
    # once the stack is removed the service is unknown, in one line
    ok(carte.client("stack", "rm", "chat"))
    ended = carte.client("service", "logs", "talk")
    assert ended.returncode == 1 and "not found" in ended.stderr
