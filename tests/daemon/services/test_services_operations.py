"""Services under operations (issue 15 items 3, 4 and the daemon SIGKILL finding), against a
real daemon: a VIP reaches a port no Compose key lists; a replica killed under a stream of new
connections costs nothing from 3 s after the kill (its conntrack entries, TIME_WAIT ones a
reused source port would reopen, are forgotten at once); a SIGKILLed daemon leaves the VIP
serving while it is down and after it is started again, and the stack's service names stay in
the replicas' /etc/hosts."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from services_lab import ready, replicas, vip
from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures
from support.web import http_get

CONFIG = 'network:\n  pools: ["10.98.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
# httpd on 8080, which neither `expose` nor `ports` lists.
WEB = """\
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir /www; hostname > /www/index.html; exec httpd -f -p 8080 -h /www"]
    stop_grace_period: 1s
    deploy:
      replicas: {replicas}
    x-carte:
      readiness:
        httpGet: {{path: /, port: 8080}}
        initialDelaySeconds: 0.5
        periodSeconds: 0.3
        failureThreshold: 1
"""


module, daemon = daemon_fixtures("module", "daemon", config=CONFIG, stacks=True, networks=True)


def deploy(daemon: Daemon, tmp_path: Path, replicas_: int) -> str:
    path = tmp_path / "compose.yaml"
    path.write_text(WEB.format(replicas=replicas_))
    ok(daemon.client("apply", "-f", str(path), "-n", "svc"))
    wait_for(ready(daemon, replicas_), 30, f"{replicas_} ready replicas")
    return vip(daemon)


class Stream:
    """A client opening a new connection per request to VIP:8080 as fast as it can, from the
    host. With `source_ports` it cycles through that many fixed source ports: a new connection
    then has the 4-tuple of one whose conntrack entry sits in TIME_WAIT (the server closed
    first), which reopens that entry, NAT included, as clients that reuse ports quickly do."""

    def __init__(self, address: str, source_ports: int = 0) -> None:
        self.address = address
        self.ports = [0] if not source_ports else list(range(41000, 41000 + source_ports))
        self.results: list[tuple[float, str]] = []  # (started, error or "")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        turn = 0
        while not self._done.is_set():
            started = time.monotonic()
            port = self.ports[turn % len(self.ports)]
            turn += 1
            try:
                http_get(self.address, 8080, source_port=port)
                self.results.append((started, ""))
            except OSError as error:
                self.results.append((started, f"{type(error).__name__}: {error}"))
            time.sleep(0.005)

    def failed(self, since: float, until: float = float("inf")) -> list[str]:
        return [e for t, e in list(self.results) if since <= t < until and e]


def test_vip_reaches_a_port_no_compose_key_lists(daemon: Daemon, tmp_path: Path) -> None:
    address = deploy(daemon, tmp_path, 1)
    assert http_get(address, 8080) == replicas(daemon)[0]["container_id"][:12]
    shown = json.loads(ok(daemon.client("--format", "json", "service", "inspect", "svc_web")))
    assert (shown[0] if isinstance(shown, list) else shown)["vip"] == address


@pytest.mark.slow
def test_killed_replica_costs_nothing_from_3_s_after(daemon: Daemon, tmp_path: Path) -> None:
    address = deploy(daemon, tmp_path, 3)
    victim = replicas(daemon)[0]["container_id"]
    pid = int(ok(daemon.client("inspect", "-f", "{{.State.Pid}}", victim)).strip())
    with Stream(address, source_ports=60) as stream:
        time.sleep(3)  # TIME_WAIT flows to every replica, the victim's too
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        time.sleep(8)
    assert len(stream.results) > 200, f"only {len(stream.results)} requests"
    late = stream.failed(killed + 3.0)
    assert not late, f"{len(late)} failed from 3 s after the kill, e.g. {late[0]}"


# A second service ready by its healthcheck: a restarted daemon's stacks handler reports it
# ready again at once, while the services handler is still loading.
CACHE = """\
  cache:
    image: busybox
    command: ["sh", "-c", "mkdir /www; echo cache > /www/index.html; exec httpd -f -p 8080 -h /www"]
    stop_grace_period: 1s
    healthcheck: {test: ["CMD", "true"], interval: 1s, start_period: 0s}
"""


@pytest.mark.slow
def test_daemon_sigkill_keeps_the_vip_serving(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(WEB.format(replicas=2) + CACHE)
    ok(daemon.client("apply", "-f", str(path), "-n", "svc"))
    wait_for(ready(daemon, 2), 30, "2 ready web replicas")
    wait_for(ready(daemon, 1, "svc_cache"), 30, "a ready cache replica")
    before = {r["container_id"] for r in replicas(daemon)}
    replica = sorted(before)[0]
    hosts = ok(daemon.client("exec", replica, "cat", "/etc/hosts"))
    address = hosts.split("\tweb web.svc")[0].rsplit("\n", 1)[-1]
    assert f"{address}\tweb web.svc" in hosts and "\tcache cache.svc" in hosts, hosts
    assert daemon.process is not None
    with Stream(address) as stream:
        time.sleep(1)
        killed = time.monotonic()
        # Three times: the services handler's facts (a ServiceUpdated at the stacks handler's
        # start) racing its loading of the VIPs once applied a table without the service's
        # replicas for a few milliseconds, refusing the connections of that moment.
        for _ in range(3):
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait(10)
            time.sleep(1)
            daemon.start()
            time.sleep(3)  # longer than the replicas' readiness probes take to pass again
    failed = stream.failed(killed)
    assert not failed, f"{len(failed)} requests failed across the daemon's restarts: {failed[0]}"
    assert {r["container_id"] for r in replicas(daemon)} == before
    assert f"{address}\tweb web.svc" in ok(daemon.client("exec", replica, "cat", "/etc/hosts"))
