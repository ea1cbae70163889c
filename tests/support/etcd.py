"""Start a real etcd (Debian's etcd-server, /usr/bin/etcd) on 127.0.0.1 for tests.

Shared by tests/library/engine and tests/daemon/cluster. Each server gets random free client
and peer ports and its own data directory; `stop` and `start` again keep the data (an etcd
restart), `close` also removes it.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import SLOWDOWN, terminate

ETCD = "/usr/bin/etcd"
START_TIMEOUT = 20.0 * SLOWDOWN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdServer:
    """One single-member etcd; ``endpoint`` is its ``http://127.0.0.1:PORT`` client URL."""

    def __init__(self, workdir: Path, *, tls: Path | None = None) -> None:
        """``tls``: a directory with ca.pem, cert.pem, key.pem: serve https and require
        client certificates signed by that CA (etcd's --client-cert-auth)."""
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.tls = tls
        scheme = "https" if tls else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self.client_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EtcdServer:
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                ETCD,
                "--name=test",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.endpoint}",
                f"--advertise-client-urls={self.endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--log-level=warn",
                *(
                    [
                        f"--trusted-ca-file={self.tls / 'ca.pem'}",
                        f"--cert-file={self.tls / 'cert.pem'}",
                        f"--key-file={self.tls / 'key.pem'}",
                        "--client-cert-auth",
                    ]
                    if self.tls
                    else []
                ),
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"etcd exited {self.process.returncode}:\n{self.log()}")
            try:
                self.call("/v3/kv/range", {"key": "AA=="})
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise AssertionError(f"etcd not ready in {START_TIMEOUT}s:\n{self.log()}")

    def call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        """One gateway request with the standard library (independent of Carte's client)."""
        request = urllib.request.Request(
            self.endpoint + path, data=json.dumps(body).encode(), method="POST"
        )
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls / "ca.pem"))
            context.load_cert_chain(self.tls / "cert.pem", self.tls / "key.pem")
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            reply: dict[str, object] = json.loads(response.read())
            return reply

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            terminate(self.process, 10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A fresh etcd for one test, stopped and removed afterwards."""
    server = EtcdServer(Path(tempfile.mkdtemp(prefix="carte-etcd-", dir="/tmp")))
    try:
        yield server.start()
    finally:
        server.close()
