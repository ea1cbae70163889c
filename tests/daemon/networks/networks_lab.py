"""Helpers for the network tests: client calls, fetching pages inside containers, host state."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from support.containers import ok, run_detached
from support.daemon import Daemon
from support.leftovers import bridge_ports  # noqa: F401  (sysfs: read at once, no `ip`)

HTTP_GET = "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}"


def fails(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a client call that must have failed."""
    assert result.returncode != 0, f"unexpected success: {result.stdout}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def network(daemon: Daemon, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(ok(daemon.client("network", "inspect", name)))
    return found[0]


def serve_http(daemon: Daemon, name: str, *args: str, port: int = 80) -> str:
    """A detached busybox httpd container serving /etc (its /etc/hostname names it); returns
    once it answers on its address (the host sits on every Carte bridge)."""
    container_id = run_detached(
        daemon, "--name", name, *args, "busybox", "httpd", "-f", "-p", str(port), "-h", "/etc"
    )
    details = json.loads(ok(daemon.client("inspect", container_id)))[0]
    address = details["endpoints"][0]["ip_address"]
    wait_until(lambda: host_fetch(address, port) != "")
    return container_id


def fetch_from(daemon: Daemon, host: str, *args: str, port: int = 80) -> str:
    """What a one-off busybox container gets for GET /hostname from host:port ('' on failure)."""
    command = HTTP_GET.format(host=host, port=port)
    result = daemon.client("run", "--rm", *args, "busybox", "sh", "-c", command)
    return result.stdout if result.returncode == 0 else ""


def host_fetch(host: str, port: int) -> str:
    """GET /hostname from the host itself, with the host's busybox nc."""
    command = HTTP_GET.format(host=host, port=port).replace("nc ", "busybox nc ", 1)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
    return done.stdout


def nft_table(name: str, family: str = "ip") -> str | None:
    done = subprocess.run(
        ["nft", "list", "table", family, name], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def link_exists(name: str) -> bool:
    done = subprocess.run(["ip", "link", "show", name], capture_output=True, check=False)
    return done.returncode == 0


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.1)


def closed_udp_port() -> int:
    """A loopback UDP port nothing listens on (the kernel answers port unreachable)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def network_config(pool: str = "10.77.0.0/16:24", upstream: str = "") -> str:
    upstream = upstream or f"127.0.0.1:{closed_udp_port()}"
    return (
        "network:\n"
        f'  pools: ["{pool}"]\n'
        f'  dns_upstreams: ["{upstream}"]\n'
        "  dns_upstream_timeout: 1.0\n"
    )


def remove_everything(daemon: Daemon) -> None:
    """Every container and user-defined network of a running daemon."""
    for container_id in daemon.client("ps", "-aq", "--no-trunc").stdout.split():
        daemon.client("rm", "-f", container_id)
    for name in ok(daemon.client("network", "ls", "--format", "{{.Name}}")).split():
        if name != "bridge":
            daemon.client("network", "rm", name)
