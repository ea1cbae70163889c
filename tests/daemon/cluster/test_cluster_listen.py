"""`carte daemon --listen`: plain TCP only on loopback with --insecure, refused at start
otherwise in one line; a TLS listener waits for the cluster's certificates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.daemon import DaemonFactory, refused_start
from support.etcd import free_port

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def test_plain_tcp_off_loopback_is_refused_at_start(tmp_path: Path) -> None:
    refusal = refused_start(tmp_path, "--listen", "tcp://10.1.2.3:2376", "--insecure")
    assert "only on a loopback address" in refusal, refusal


def test_insecure_loopback_and_a_tls_listener_without_certificates(
    daemons: DaemonFactory,
) -> None:
    port = free_port()
    daemon = daemons(
        config=(
            "handlers: {enabled: [api, membership]}\n"
            f"cluster: {{listen: 'tcp://127.0.0.1:{port}', insecure: true}}\n"
        )
    )
    env = dict(os.environ, CARTE_INSECURE="1")
    version = daemon_client(daemon, f"tcp://127.0.0.1:{port}", "version", env=env)
    assert version.returncode == 0, version.stderr

    tls_port = free_port()
    tls = daemons(
        config=f"handlers: {{enabled: [api, membership]}}\ncluster: {{listen: 'tcp://127.0.0.1:{tls_port}'}}\n"
    )
    deadline = time.monotonic() + 10
    while "waits for the cluster certificates" not in tls.log():
        assert time.monotonic() < deadline, tls.log()
        time.sleep(0.1)
    refused = daemon_client(tls, f"tcp://127.0.0.1:{tls_port}", "version", env=dict(os.environ))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[0].startswith("carte: ")
    assert len(refused.stderr.strip().splitlines()) == 1


def daemon_client(
    daemon: object, host: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carte", "-H", host, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
