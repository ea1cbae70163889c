"""RUN steps get a real network: by default a namespace on Carte's NAT'd default bridge with
the network's DNS (which forwards to the daemon's upstreams), `--network host|none` on
`carte build` and `RUN --network=...`; /etc/resolv.conf and /etc/hosts are bound for the step
and never land in a layer.

Nothing outside the machine is reachable, so the "outside world" is the test's own: a tiny
DNS server on 127.0.0.1 configured as the daemon's upstream, answering one name with the
default bridge's gateway, and an HTTP server bound (IP_FREEBIND) on that gateway address.
"""

from __future__ import annotations

import http.server
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from build_checks import build, image, leftovers, read_file
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

from carte.image import ImageStore

NAME = b"files.carte-test"
_IP_FREEBIND = 15


class _Dns:
    """Answers A queries for NAME with `self.address`; NXDOMAIN for anything else."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1"
        self.queries: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            ident = struct.unpack("!H", data[:2])[0]
            labels, offset = [], 12
            while data[offset]:
                length = data[offset]
                labels.append(data[offset + 1 : offset + 1 + length])
                offset += 1 + length
            question = data[12 : offset + 5]
            qtype = struct.unpack("!H", data[offset + 1 : offset + 3])[0]
            name = b".".join(labels).lower()
            self.queries.append(name)
            if name == NAME and qtype == 1:
                answer = question[:-4] + struct.pack(
                    "!HHIH4s", 1, 1, 30, 4, socket.inet_aton(self.address)
                )
                reply = struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + answer
            elif name == NAME:
                reply = struct.pack("!HHHHHH", ident, 0x8180, 1, 0, 0, 0) + question
            else:
                reply = struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question
            self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def dns() -> Iterator[_Dns]:
    server = _Dns()
    yield server
    server.close()


@pytest.fixture(scope="module")
def net_daemon(busybox_tar: Path, dns: _Dns) -> Iterator[Daemon]:
    config = f'network:\n  dns_upstreams: ["127.0.0.1:{dns.port}"]\n'
    with ModuleDaemon(busybox_tar, tag="busybox:latest", config=config) as module:
        yield module.daemon


def _gateway(daemon: Daemon) -> str:
    shown = daemon.client("--format", "json", "network", "inspect", "bridge")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    record = data[0] if isinstance(data, list) else data
    return str(record.get("gateway") or record.get("Gateway"))


def _http_server(address: str, served: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    class FreeBind(http.server.ThreadingHTTPServer):
        def server_bind(self) -> None:
            # The bridge (and so its gateway address) appears with the first attached step.
            self.socket.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
            super().server_bind()

    server = FreeBind((address, 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_run_resolves_and_reaches_a_server_through_the_default_bridge(
    net_daemon: Daemon, dns: _Dns, tmp_path: Path
) -> None:
    gateway = _gateway(net_daemon)
    dns.address = gateway
    served = tmp_path / "served"
    served.mkdir()
    (served / "hello.txt").write_text("over the bridge\n")
    server = _http_server(gateway, served)
    port = server.server_address[1]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\n"
        f"RUN wget -q -O /fetched http://{NAME.decode()}:{port}/hello.txt"
        " && cat /etc/resolv.conf > /resolv.seen && cat /etc/hosts > /hosts.seen"
        " && ip -o -4 addr show eth0 > /eth0.seen\n"
        "RUN --network=none ip link show | grep -c ': ' > /links.none\n"
    )
    try:
        result = build(net_daemon, context, "-t", "net:1")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert NAME in dns.queries  # resolved through the network's DNS and the upstream
    assert read_file(net_daemon, "net:1", "/fetched") == b"over the bridge\n"
    assert read_file(net_daemon, "net:1", "/resolv.seen") == f"nameserver {gateway}\n".encode()
    assert b"localhost" in (read_file(net_daemon, "net:1", "/hosts.seen") or b"")
    assert b"eth0" in (read_file(net_daemon, "net:1", "/eth0.seen") or b"")
    assert read_file(net_daemon, "net:1", "/links.none") == b"1\n"  # only loopback
    # Neither file is committed: not in any layer the build made.
    assert _in_layers(net_daemon, "net:1", "etc/resolv.conf") == []
    assert _in_layers(net_daemon, "net:1", "etc/hosts") == []
    endpoints = net_daemon.client("--format", "json", "network", "inspect", "bridge")
    assert "build-" not in endpoints.stdout  # the step's endpoint went with the step
    assert leftovers(net_daemon) == []


def test_network_none_and_host_on_build(net_daemon: Daemon, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN ip link show | grep -c ': ' > /links && cat /etc/hosts > /hosts\n"
    )
    result = build(net_daemon, context, "-t", "none:1", "--network", "none")
    assert result.returncode == 0, result.stderr
    assert read_file(net_daemon, "none:1", "/links") == b"1\n"
    result = build(net_daemon, context, "-t", "host:1", "--network", "host", "--no-cache")
    assert result.returncode == 0, result.stderr
    # The host's interfaces (others' come and go meanwhile, so only "more than lo").
    assert int(read_file(net_daemon, "host:1", "/links") or b"0") > 1
    assert read_file(net_daemon, "host:1", "/hosts") == Path("/etc/hosts").read_bytes()
    (context / "Dockerfile").write_text("FROM busybox\nRUN --network=bridge true\n")
    result = build(net_daemon, context)
    assert result.returncode != 0
    assert 'Dockerfile:2: RUN: --network "bridge" is unknown' in result.stderr
    assert len(result.stderr.strip().splitlines()[-1:]) == 1


def _in_layers(daemon: Daemon, name: str, path: str) -> list[str]:
    """The layers (diff ids) of `name` whose tar holds `path`."""
    import tarfile

    store = ImageStore(daemon.root)
    found = []
    stored = image(daemon, name)
    for descriptor, diff_id in zip(stored.manifest.layers, stored.diff_ids, strict=True):
        with tarfile.open(store.blob_path(descriptor.digest)) as layer:
            names = {member.name.lstrip("./") for member in layer.getmembers()}
        if path in names:
            found.append(diff_id)
    return found
