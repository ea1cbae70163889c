"""Stacks against a real daemon: apply, idempotent re-apply, dry run, scale, self-healing,
rolling updates gated on readiness, automatic rollback, rollout status exit codes, stack rm."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.containers import ok
from support.daemon import Daemon
from support.web import http_get

# busybox httpd replicas answering with their hostname (the container's short id).
WEB = """\
services:
  web:
    image: busybox
    stop_grace_period: 1s
    expose: ["80"]
    command:
      - sh
      - -c
      - mkdir -p /www && echo {tag} $$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www
    deploy:
      replicas: {replicas}
      update_config:
        parallelism: 1
        order: {order}
        monitor: 1s
        failure_action: rollback
    x-carte:
      readiness:
        {probe}
        periodSeconds: 0.3
        failureThreshold: 2
"""
HTTP_PROBE = "httpGet: {path: /, port: 80}"
NEVER_PROBE = "httpGet: {path: /, port: 81}"


def write(tmp_path: Path, text: str, name: str = "compose.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def web(
    tag: str = "v1", replicas: int = 2, order: str = "start-first", probe: str = HTTP_PROBE
) -> str:
    return WEB.format(tag=tag, replicas=replicas, order=order, probe=probe)


def apply(carte: Daemon, path: Path, *extra: str) -> str:
    return ok(carte.client("apply", "-f", str(path), "-n", "demo", *extra))


def services(carte: Daemon) -> dict[str, Any]:
    rows = json.loads(ok(carte.client("--format", "json", "service", "ls")))
    return {f"{r['stack']}_{r['name']}": r for r in rows}


def replicas(carte: Daemon, service: str = "demo_web") -> list[dict[str, Any]]:
    return json.loads(ok(carte.client("--format", "json", "service", "ps", service)))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def ready_count(carte: Daemon, n: int, service: str = "demo_web") -> Callable[[], bool]:
    def check() -> bool:
        row = services(carte).get(service)
        return row is not None and row["ready"] == n and row["running"] == n

    return check


def test_apply_twice_changes_nothing_and_replicas_serve(carte: Daemon, tmp_path: Path) -> None:
    path = write(tmp_path, web(replicas=2))
    plan = apply(carte, path)
    assert "create" in plan and "web" in plan and "demo_default" in plan
    wait_for(ready_count(carte, 2), 20, "2 ready replicas")
    rows = replicas(carte)
    bodies = {http_get(r["ip"]) for r in rows}
    assert len(bodies) == 2 and all(b.startswith("v1 ") for b in bodies)
    ids = {r["container_id"] for r in rows}
    again = apply(carte, path)
    assert "unchanged" in again and "create" not in again and "replace" not in again
    time.sleep(1)
    assert {r["container_id"] for r in replicas(carte)} == ids


def test_dry_run_changes_nothing(carte: Daemon, tmp_path: Path) -> None:
    path = write(tmp_path, web(replicas=1))
    plan = apply(carte, path, "--dry-run")
    assert "dry run" in plan and "create" in plan
    assert services(carte) == {}
    assert ok(carte.client("ps", "-aq")).split() == []


def test_scale_up_and_down(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, write(tmp_path, web(replicas=1)))
    wait_for(ready_count(carte, 1), 20, "1 ready")
    ok(carte.client("service", "scale", "demo_web=3"))
    wait_for(ready_count(carte, 3), 20, "3 ready")
    ok(carte.client("service", "scale", "web=1"))
    wait_for(lambda: len(replicas(carte)) == 1, 20, "scaled down to 1")
    bad = carte.client("service", "scale", "demo_web=-1")
    assert bad.returncode != 0


def test_kill_9_replica_replaced_by_a_ready_one_within_5s(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, write(tmp_path, web(replicas=2)))
    wait_for(ready_count(carte, 2), 20, "2 ready")
    victim = replicas(carte)[0]
    inspect = json.loads(ok(carte.client("inspect", victim["container_id"])))
    details = inspect[0] if isinstance(inspect, list) else inspect
    os.kill(details["state"]["pid"], signal.SIGKILL)
    started = time.monotonic()

    def replaced() -> bool:
        rows = replicas(carte)
        ids = {r["container_id"] for r in rows if r["ready"]}
        return victim["container_id"] not in ids and len(ids) == 2

    wait_for(replaced, 5, "a ready replacement")
    assert time.monotonic() - started < 5


def _loop_client(ips: Callable[[], list[str]], stop: Callable[[], bool]) -> tuple[int, int]:
    """Requests to the ready replicas until `stop`; (ok, failed)."""
    good = failed = 0
    while not stop() and good + failed < 5000:
        for ip in ips():
            try:
                http_get(ip)
                good += 1
            except OSError:
                failed += 1
    return good, failed


def _rolling_update(carte: Daemon, tmp_path: Path, order: str) -> None:
    import threading

    apply(carte, write(tmp_path, web(tag="v1", replicas=3, order=order)))
    wait_for(ready_count(carte, 3), 30, "3 ready")
    ready_ips: list[str] = [r["ip"] for r in replicas(carte) if r["ready"]]
    done = threading.Event()
    result: list[tuple[int, int]] = []

    def refresh() -> None:
        while not done.is_set():
            ready_ips[:] = [r["ip"] for r in replicas(carte) if r["ready"]]
            time.sleep(0.05)

    def client() -> None:
        result.append(_loop_client(lambda: list(ready_ips), done.is_set))

    threads = [threading.Thread(target=refresh), threading.Thread(target=client)]
    for thread in threads:
        thread.start()
    try:
        plan = apply(carte, write(tmp_path, web(tag="v2", replicas=3, order=order)))
        assert "replace" in plan
        status = carte.client("rollout", "status", "demo_web", "--timeout", "60", timeout=90)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        done.set()
        for thread in threads:
            thread.join()
    rows = replicas(carte)
    assert len(rows) == 3 and all(r["revision"] == 2 for r in rows)
    assert all(http_get(r["ip"]).startswith("v2 ") for r in rows)
    good, failed = result[0]
    assert good > 0
    assert failed == 0 or order == "stop-first", f"{failed} failed requests"


# Was intermittent: about one run in three on a loaded 2-core machine lost one request during
# the rollout (a timeout or a reset). The likely cause, a replacement handed the old replica's
# address while its conntrack and neighbour entries were being forgotten, is gone (9d6bed3:
# 6 of 6 runs passed without a rerun since). One rerun stays, which must itself see zero
# failures: under heavy load a new replica's readiness can also time out and roll back.
@pytest.mark.flaky(reruns=1)
@pytest.mark.slow
def test_rolling_update_start_first(carte: Daemon, tmp_path: Path) -> None:
    _rolling_update(carte, tmp_path, "start-first")


# Was intermittent: about one run in three on a loaded 2-core machine lost one request during
# the rollout (a timeout or a reset). The likely cause, a replacement handed the old replica's
# address while its conntrack and neighbour entries were being forgotten, is gone (9d6bed3:
# 6 of 6 runs passed without a rerun since). One rerun stays, which must itself see zero
# failures: under heavy load a new replica's readiness can also time out and roll back.
@pytest.mark.flaky(reruns=1)
@pytest.mark.slow
def test_rolling_update_stop_first(carte: Daemon, tmp_path: Path) -> None:
    _rolling_update(carte, tmp_path, "stop-first")


def test_update_never_ready_rolls_back_by_itself(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, write(tmp_path, web(tag="v1", replicas=2)))
    wait_for(ready_count(carte, 2), 20, "2 ready")
    before = {r["container_id"] for r in replicas(carte)}
    apply(carte, write(tmp_path, web(tag="v2", replicas=2, probe=NEVER_PROBE)))
    status = carte.client("rollout", "status", "demo_web", "--timeout", "60", timeout=90)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "rolled_back" in status.stdout
    wait_for(ready_count(carte, 2), 20, "2 ready after the rollback")
    rows = replicas(carte)
    assert {r["container_id"] for r in rows} == before
    assert all(http_get(r["ip"]).startswith("v1 ") for r in rows)
    history = ok(carte.client("rollout", "history", "demo_web"))
    assert "1" in history and "2" in history


def test_rollout_undo(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, write(tmp_path, web(tag="v1", replicas=1)))
    wait_for(ready_count(carte, 1), 20, "1 ready")
    apply(carte, write(tmp_path, web(tag="v2", replicas=1)))
    assert carte.client("rollout", "status", "demo_web", timeout=60).returncode == 0
    ok(carte.client("rollout", "undo", "demo_web", "--to-revision", "1"))
    assert carte.client("rollout", "status", "demo_web", timeout=60).returncode == 0
    rows = replicas(carte)
    assert len(rows) == 1 and http_get(rows[0]["ip"]).startswith("v1 ")


def test_stack_rm_leaves_nothing(carte: Daemon, tmp_path: Path) -> None:
    apply(carte, write(tmp_path, web(replicas=2)))
    wait_for(ready_count(carte, 2), 20, "2 ready")
    ok(carte.client("stack", "rm", "demo"))
    assert ok(carte.client("ps", "-aq")).split() == []
    assert "demo_default" not in ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()
    assert json.loads(ok(carte.client("--format", "json", "stack", "ls"))) == []
    missing = carte.client("stack", "rm", "demo")
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_bad_manifest_rejected_before_anything_changes(carte: Daemon, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        web(replicas=1).replace("    image: busybox\n", "    image: busybox\n    imagee: x\n"),
    )
    result = carte.client("apply", "-f", str(path), "-n", "demo")
    assert result.returncode != 0
    assert "compose.yaml:4: services.web.imagee" in result.stderr
    assert services(carte) == {}
    assert "demo_default" not in ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()


def test_missing_image_rejected_before_anything_changes(carte: Daemon, tmp_path: Path) -> None:
    path = write(tmp_path, web(replicas=1).replace("image: busybox", "image: nosuch:1"))
    result = carte.client("apply", "-f", str(path), "-n", "demo")
    assert result.returncode != 0
    assert 'image "nosuch:1" not found locally' in result.stderr
    assert services(carte) == {}
