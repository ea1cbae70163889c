"""Debian's prometheus server for the observability tests: started on a free loopback port
with its TSDB in the test's directory, scraping the targets a test names every second, and
queried back through PromQL (``/api/v1/query``).

The apt package may also run a system prometheus on :9090; it is never used or touched."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PROMETHEUS = Path("/usr/bin/prometheus")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def prometheus(workdir: Path, scrape_configs: str) -> Iterator[str]:
    """A prometheus server with ``scrape_configs`` (YAML, the list under that key), scraping
    every second; yields its URL and stops it (and waits for it) on the way out."""
    if not PROMETHEUS.exists():
        pytest.fail("Debian's prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n" + scrape_configs
    )
    log = (workdir / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def query(prometheus: str, promql: str) -> list[dict[str, object]]:
    """The instant vector of ``promql`` (empty while the server is not up yet)."""
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(promql)}"
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            answer = json.load(reply)
    except OSError:
        return []
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result
