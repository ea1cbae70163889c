"""Start Debian's docker-registry on a free loopback port with its own config, for tests."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


class RunningRegistry:
    def __init__(self, host: str, storage: Path) -> None:
        self.host = host
        self.storage = storage


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_registry(
    base: Path, htpasswd: Path | None, extra_config: str = ""
) -> Iterator[RunningRegistry]:
    base.mkdir(parents=True)
    port = _free_port()
    auth = f"auth: {{htpasswd: {{realm: carte-test, path: {htpasswd}}}}}\n" if htpasswd else ""
    config = base / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n" + auth + extra_config
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.05)
        yield RunningRegistry(f"127.0.0.1:{port}", base / "data")
    finally:
        process.terminate()
        process.wait(timeout=10)


def start_private_registry(base: Path, user: str, password: str) -> Iterator[RunningRegistry]:
    """`start_registry` with htpasswd auth for one user (bcrypt, as the registry wants)."""
    base.mkdir(parents=True, exist_ok=True)
    htpasswd = base / "htpasswd"
    subprocess.run(
        ["htpasswd", "-B", "-b", "-c", str(htpasswd), user, password],
        check=True,
        capture_output=True,
    )
    yield from start_registry(base / "private", htpasswd)
