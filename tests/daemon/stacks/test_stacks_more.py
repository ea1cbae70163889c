"""More of stacks against a real daemon: x-carte network policies between services, `build:`
built by Carte's builder, replicas adopted (not replaced) by a restarted daemon, service logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from test_stacks_daemon import ready_count, replicas, wait_for, web, write

POLICY = """\
services:
  web:
    image: busybox
    stop_grace_period: 1s
    command:
      ["sh", "-c", "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"]
    x-carte:
      policies: [{from: [api], ports: [80]}]
  api:
    image: busybox
    stop_grace_period: 1s
    command: ["sleep", "3600"]
  other:
    image: busybox
    stop_grace_period: 1s
    command: ["sleep", "3600"]
"""


def first_replica(carte: Daemon, service: str) -> dict[str, str]:
    def running() -> bool:
        return any(r["ready"] for r in replicas(carte, f"pol_{service}"))

    wait_for(running, 20, f"{service} ready")
    return next(r for r in replicas(carte, f"pol_{service}") if r["ready"])


def test_policies_allow_only_the_named_services(carte: Daemon, tmp_path: Path) -> None:
    path = write(tmp_path, POLICY)
    ok(carte.client("apply", "-f", str(path), "-n", "pol"))
    web_ip = first_replica(carte, "web")["ip"]
    api = first_replica(carte, "api")["container_id"]
    other = first_replica(carte, "other")["container_id"]
    # busybox wget crashes in this rootfs; nc speaks the HTTP
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {web_ip} 80"
    allowed = carte.client("exec", api, "sh", "-c", get)
    assert allowed.returncode == 0 and allowed.stdout.strip().endswith("hi"), allowed.stderr
    denied = carte.client("exec", other, "sh", "-c", get)
    assert "hi" not in denied.stdout
    before = ok(carte.client("network", "policy", "ls", "pol_default"))
    again = ok(carte.client("apply", "-f", str(path), "-n", "pol"))
    assert "unchanged" in again and "create" not in again
    assert ok(carte.client("network", "policy", "ls", "pol_default")) == before


def test_build_key_builds_the_image(carte: Daemon, tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM busybox\nRUN echo built > /built\n")
    write(
        tmp_path,
        "services:\n  app:\n    build: ./app\n    stop_grace_period: 1s\n"
        '    command: ["sleep", "3600"]\n',
    )
    ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "bld", timeout=120))
    wait_for(ready_count(carte, 1, "bld_app"), 30, "1 ready")
    row = replicas(carte, "bld_app")[0]
    assert row["image"].startswith("bld_app")
    assert ok(carte.client("exec", row["container_id"], "cat", "/built")).strip() == "built"


def test_restarted_daemon_adopts_replicas(carte: Daemon, tmp_path: Path) -> None:
    ok(carte.client("apply", "-f", str(write(tmp_path, web(replicas=2))), "-n", "demo"))
    wait_for(ready_count(carte, 2), 20, "2 ready")
    ids = {r["container_id"] for r in replicas(carte)}
    assert carte.stop() == 0
    carte.start()
    wait_for(ready_count(carte, 2), 20, "2 ready after the restart")
    assert {r["container_id"] for r in replicas(carte)} == ids
    logs = ok(carte.client("service", "logs", "demo_web"))
    assert logs == "" or "demo_web_" in logs
    details = json.loads(ok(carte.client("service", "inspect", "demo_web")))
    assert details["revision"] == 1 and len(details["replicas"]) == 2


def test_stack_name_from_file_then_directory(carte: Daemon, tmp_path: Path) -> None:
    body = 'services:\n  a:\n    image: busybox\n    command: ["true"]\n    deploy: {replicas: 0}\n'
    named = tmp_path / "Named_Dir"
    named.mkdir()
    (named / "compose.yaml").write_text("name: fromfile\n" + body)
    ok(carte.client("apply", "-f", str(named / "compose.yaml")))
    (tmp_path / "My.App").mkdir()
    (tmp_path / "My.App" / "compose.yaml").write_text(body)
    ok(carte.client("apply", "-f", str(tmp_path / "My.App" / "compose.yaml")))
    stacks = {s["name"] for s in json.loads(ok(carte.client("--format", "json", "stack", "ls")))}
    assert stacks == {"fromfile", "myapp"}


def test_restart_policy_conditions_and_max_attempts(carte: Daemon, tmp_path: Path) -> None:
    write(
        tmp_path,
        "services:\n"
        "  once:\n    image: busybox\n    command: ['true']\n"
        "    deploy: {restart_policy: {condition: none}}\n"
        "  crash:\n    image: busybox\n    command: ['sh', '-c', 'exit 3']\n"
        "    deploy: {restart_policy: {condition: on-failure, max_attempts: 2}}\n",
    )
    ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "rp"))

    def settled() -> list[str]:
        rows = json.loads(ok(carte.client("--format", "json", "stack", "ps", "rp")))
        return sorted(
            f"{r['service']}:{r['status'].split(' ')[0]}:{r['container_id']}" for r in rows
        )

    def both_exited() -> bool:
        rows = settled()
        return len(rows) == 2 and all(":Exited:" in r for r in rows)

    # the crashing one is replaced twice (max_attempts), then its third exit is kept
    def stable() -> bool:
        if not both_exited():
            return False
        seen = settled()
        time.sleep(1.5)
        return settled() == seen

    wait_for(stable, 40, "both services' replicas exited and kept")
    first = settled()
    time.sleep(2)
    assert settled() == first, "an exited replica was replaced after its policy said no"
