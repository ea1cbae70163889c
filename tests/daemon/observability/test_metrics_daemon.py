"""/metrics against a real daemon: Debian's prometheus server scrapes ``--metrics-listen``
(set through carte.yaml) and PromQL gives back a running container's memory and a service's
ready replicas; the API socket serves the same exposition with the daemon's internals; a
non-loopback ``--metrics-listen`` without ``--metrics-insecure`` stops the daemon at start
with one line.

The prometheus server is the test's own: a free loopback port, its TSDB in the test's tmp
directory. The apt package may also run a system prometheus on :9090; it is never used."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_server import free_port, prometheus, query
from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

WEB = """\
services:
  web:
    image: busybox
    command: ["sleep", "300"]
    deploy:
      replicas: 2
"""

METRICS_PORT = free_port()
CONFIG = (
    'network:\n  pools: ["10.187.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'
    f'handlers:\n  options:\n    metrics: {{listen: "127.0.0.1:{METRICS_PORT}"}}\n'
)


@pytest.fixture(scope="module")
def daemon(busybox_tar: Path) -> Iterator[Daemon]:
    with ModuleDaemon(busybox_tar, config=CONFIG, stacks=True, networks=True) as module:
        yield module.daemon


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A prometheus server scraping the daemon's --metrics-listen every second; its URL."""
    target = (
        f"  - {{job_name: carte, static_configs: [{{targets: ['127.0.0.1:{METRICS_PORT}']}}]}}\n"
    )
    with prometheus(tmp_path, target) as url:
        yield url


def test_prometheus_scrapes_container_memory_and_ready_replicas(
    daemon: Daemon, server: str, tmp_path: Path
) -> None:
    ok(daemon.client("run", "-d", "--name", "obs-sleeper", "busybox", "sleep", "300"))
    manifest = tmp_path / "compose.yaml"
    manifest.write_text(WEB)
    ok(daemon.client("apply", "-f", str(manifest), "-n", "obs"))
    memory = 'carte_container_memory_bytes{name="obs-sleeper"} > 0'
    replicas = 'carte_service_ready_replicas{stack="obs",service="web"} == 2'
    wait_for(lambda: query(server, memory), 60, f"prometheus to answer {memory}")
    wait_for(lambda: query(server, replicas), 60, f"prometheus to answer {replicas}")
    wait_for(lambda: query(server, 'up{job="carte"} == 1'), 30, "a successful scrape")


def test_api_socket_serves_the_daemon_internals(daemon: Daemon) -> None:
    daemon.request("POST", "/v1/commands/RemoveContainer", {"ref": "no-such"})
    reply = daemon.request("GET", "/metrics")
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    for sample in (
        'carte_api_request_duration_seconds_count{method="POST",route="/v1/commands/<name>",'
        'status="404"}',
        'carte_store_operation_duration_seconds_count{operation="list"}',
        'carte_bus_subscriber_queue_depth{subscriber="stacks"}',
    ):
        assert sample in text, f"{sample} missing from:\n{text[:3000]}"
    with pytest.raises(urllib.error.HTTPError) as other:
        urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/v1/info", timeout=3)
    other.value.close()
    assert other.value.code == 404  # the plain listener serves /metrics and nothing else


def test_non_loopback_metrics_listen_is_refused_at_start(tmp_path: Path) -> None:
    started = time.monotonic()
    refused = Daemon(tmp_path)
    result = subprocess.run(
        [*refused.argv(), "--metrics-listen", "0.0.0.0:9323"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics-insecure" in lines[0], result.stderr
    assert time.monotonic() - started < 30
