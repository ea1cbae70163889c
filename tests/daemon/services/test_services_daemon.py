"""Services against a real daemon: a 4-replica busybox httpd stack behind its VIP, reached
from the host and from a container on the stack network (ARP for the VIP, hairpin), a
killed replica never served again, a zero-replica service refused at once, nothing of the
services table left after `stack rm`; CPU autoscaling up and back down after the
stabilization window (1 s sync period); `service update` changing cgroup limits in place."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from services_lab import AUTOSCALED, desired, ready, replicas, vip
from support import REPO
from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon
from support.web import http_get

from carte.handlers.network._records import nft_table_name

CONFIG = (
    'network:\n  pools: ["10.94.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
    "autoscaler:\n  sync_period: 1.0\n"
)
WEB = """\
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir /www; hostname > /www/index.html; exec httpd -f -p 80 -h /www"]
    expose: ["80"]
    deploy:
      replicas: {replicas}
    x-carte:
      readiness:
        httpGet: {{path: /, port: 80}}
        periodSeconds: 0.3
        failureThreshold: 1
"""


def lb_table(daemon: Daemon) -> str:
    return f"{nft_table_name(daemon.root)}-lb"


def table_exists(table: str) -> bool:
    probe = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def daemon(busybox_tar: Path) -> Iterator[Daemon]:
    """One daemon for the module; after it, its stacks and containers are removed and nothing
    of it (bridges, nft tables including the services' -lb) may be left on the host."""
    with ModuleDaemon(busybox_tar, config=CONFIG, stacks=True, networks=True) as module:
        yield module.daemon


def deploy(daemon: Daemon, tmp_path: Path, replicas: int) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(WEB.format(replicas=replicas))
    ok(daemon.client("apply", "-f", str(path), "-n", "svc"))


def hostnames(daemon: Daemon) -> dict[str, str]:
    """Replica hostname (the short id httpd serves) -> container id."""
    return {r["container_id"][:12]: r["container_id"] for r in replicas(daemon)}


def test_four_replicas_share_400_requests(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, tmp_path, 4)
    wait_for(ready(daemon, 4), 30, "4 ready replicas")
    address = vip(daemon)
    wait_for(lambda: table_exists(lb_table(daemon)), 10, "services table")
    served = Counter(http_get(address) for _ in range(400))
    names = hostnames(daemon)
    assert set(served) == set(names), f"served by {dict(served)}, replicas {sorted(names)}"
    for name, count in served.items():
        assert 60 <= count <= 140, f"replica {name} served {count} of 400: {dict(served)}"


def test_vip_answers_containers_and_the_replicas_themselves(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, tmp_path, 2)
    wait_for(ready(daemon, 2), 30, "2 ready replicas")
    address = vip(daemon)
    names = hostnames(daemon)
    seen: set[str] = set()
    first = next(iter(names.values()))
    for _ in range(30):
        got = ok(daemon.client("exec", first, "wget", "-qO-", f"http://{address}/"))
        seen.add(got.strip())
        if seen == set(names):
            break
    assert seen == set(names), f"hairpin reached {seen}, replicas {sorted(names)}"


def test_service_names_resolve_to_the_vip(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, tmp_path, 1)
    wait_for(ready(daemon, 1), 30, "1 ready replica")
    address = vip(daemon)
    replica = replicas(daemon)[0]["container_id"]
    for name in ("web", "web.svc"):
        answer = ok(daemon.client("exec", replica, "nslookup", name))
        assert address in answer, f"{name}: {answer}"


def test_killed_replica_is_never_served(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, tmp_path, 3)
    wait_for(ready(daemon, 3), 30, "3 ready replicas")
    address = vip(daemon)
    rows = replicas(daemon)
    victim = rows[0]["container_id"]
    pid = int(ok(daemon.client("inspect", "-f", "{{.State.Pid}}", victim)).strip())
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not any(r["container_id"] == victim and r["ready"] for r in replicas(daemon)),
        10,
        "the killed replica leaves the ready set",
    )
    served = Counter(http_get(address) for _ in range(100))
    assert victim[:12] not in served, f"the dead replica was routed to: {dict(served)}"


def test_zero_replicas_refuse_at_once(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, tmp_path, 1)
    wait_for(ready(daemon, 1), 30, "1 ready replica")
    address = vip(daemon)
    ok(daemon.client("service", "scale", "svc_web=0"))

    def refused() -> bool:
        try:
            http_get(address)
        except ConnectionRefusedError:
            return True
        return False

    # The replica leaves the VIP's set before it is stopped (its stop may take a while).
    wait_for(refused, 15, "the VIP refusing connections")
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        http_get(address)
    assert time.monotonic() - started < 1.0


def test_stack_rm_removes_vip_and_table(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, tmp_path, 1)
    wait_for(ready(daemon, 1), 30, "1 ready replica")
    assert table_exists(lb_table(daemon))
    ok(daemon.client("stack", "rm", "svc"))
    wait_for(lambda: not table_exists(lb_table(daemon)), 10, "services table removed")


BUSY = (
    """\
services:
  busy:
    image: busybox
    command: ["sh", "-c", "while [ ! -e /stop ]; do :; done; exec sleep 1000000"]
"""
    + AUTOSCALED
    + "        scale_down_stabilization: {window}\n"
)


def test_cpu_load_scales_up_then_down_after_the_window(daemon: Daemon, tmp_path: Path) -> None:
    window = 6.0
    path = tmp_path / "compose.yaml"
    path.write_text(BUSY.format(window=window))
    try:
        ok(daemon.client("apply", "-f", str(path), "-n", "auto"))
        wait_for(
            lambda: any(r["ready"] for r in replicas(daemon, "auto_busy")), 30, "a ready replica"
        )
        # Two sync periods (1 s): one to take a CPU baseline, one to measure and scale; the
        # slack covers the first stats sample (0.25 s) and the CLI round trips.
        wait_for(lambda: desired(daemon, "auto", "busy") == 2, 2 * 1.0 + 1.5, "scale-up to 2")
        wait_for(lambda: len(replicas(daemon, "auto_busy")) == 2, 30, "2 replicas running")
        for row in replicas(daemon, "auto_busy"):
            ok(daemon.client("exec", row["container_id"], "touch", "/stop"))
        idle = time.monotonic()
        wait_for(lambda: desired(daemon, "auto", "busy") == 1, window + 6.0, "scale-down to 1")
        assert time.monotonic() - idle >= window - 1.0, "scaled down before the window ended"
    finally:
        daemon.client("stack", "rm", "auto")


def cgroup_file(pid: int, controller: str, name: str) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            for mount in (controllers, controller):
                candidate = Path("/sys/fs/cgroup") / mount / path.lstrip("/") / name
                if candidate.exists():
                    return candidate
    raise AssertionError(f"no {controller} cgroup file {name} for pid {pid}")


def test_service_update_changes_limits_in_place(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, tmp_path, 1)
    wait_for(ready(daemon, 1), 30, "1 ready replica")
    before = replicas(daemon)[0]
    container_id = before["container_id"]
    pid = int(ok(daemon.client("inspect", "-f", "{{.State.Pid}}", container_id)).strip())
    ok(daemon.client("service", "update", "--cpus", "0.5", "--memory", "64m", "svc_web"))
    after = replicas(daemon)
    assert [r["container_id"] for r in after] == [container_id]
    assert int(ok(daemon.client("inspect", "-f", "{{.State.Pid}}", container_id)).strip()) == pid
    memory = int(cgroup_file(pid, "memory", "memory.limit_in_bytes").read_text())
    assert memory == 64 * 1024 * 1024
    quota = int(cgroup_file(pid, "cpu", "cpu.cfs_quota_us").read_text())
    period = int(cgroup_file(pid, "cpu", "cpu.cfs_period_us").read_text())
    assert quota / period == 0.5
    spec = json.loads(ok(daemon.client("--format", "json", "service", "inspect", "svc_web")))
    limits = spec["spec"]["deploy"]["resources"]["limits"]
    assert limits["memory"] == 64 * 1024 * 1024, limits


def test_service_update_bad_input_is_one_line(daemon: Daemon) -> None:
    result = daemon.client("service", "update", "--cpus", "lots", "svc_web")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "--cpus" in result.stderr


def test_example_stack_serves_through_vips(daemon: Daemon, tmp_path: Path) -> None:
    """config/examples/stack-web-db.yaml as docs/stacks.md deploys it (on a free host port, so
    a daemon running the example on this host is not disturbed)."""
    example = REPO / "config" / "examples" / "stack-web-db.yaml"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "stack-web-db.yaml"
    path.write_text(example.read_text().replace('"8080:80"', f'"{port}:80"'))
    try:
        ok(daemon.client("apply", "-f", str(path), "-n", "web-db"))

        def all_ready() -> bool:
            rows = json.loads(ok(daemon.client("--format", "json", "service", "ls", "web-db")))
            return len(rows) == 2 and all(r["ready"] == r["desired"] for r in rows)

        wait_for(all_ready, 40, "web and db ready")
        served = {http_get("127.0.0.1", port) for _ in range(20)}
        assert len(served) == 2 and all(s.startswith("web ") for s in served), served
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /cgi-bin/db HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
        assert b": ok" in reply, reply
    finally:
        daemon.client("stack", "rm", "web-db")
