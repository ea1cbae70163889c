"""`inspect` and `port` as Docker users reach for them, against a real daemon: `inspect NAME`
finds an image, a network or a volume too (`--type` narrows it), `image inspect -f`, the host
port a random `-p 80` got (in `.NetworkSettings.Ports` and from `carte port`), and the
container's hostname in `.Config.Hostname`."""

from __future__ import annotations

import json
import socket

from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.233.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'

inspect_daemon, carte = daemon_fixtures(
    "inspect_daemon", config=CONFIG, stacks=False, networks=True, volumes=True
)


def test_inspect_finds_every_kind_of_object(carte: Daemon) -> None:
    ok(carte.client("network", "create", "lan"))
    ok(carte.client("volume", "create", "store"))
    ok(carte.client("run", "-d", "--name", "box", "busybox", "sleep", "600"))

    def shown(*args: str) -> str:
        return ok(carte.client("inspect", *args)).strip()

    hostname = ok(carte.client("exec", "box", "hostname")).strip()
    assert shown("-f", "{{.Config.Hostname}}", "box") == hostname
    image_id = shown("-f", "{{.Id}}", "busybox")
    assert image_id.startswith("sha256:")
    assert shown("-f", "{{.RepoTags}} {{.Os}}", "busybox") == "[busybox:latest] linux"
    assert shown("-f", "{{.name}}", "lan", "store") == "lan\nstore"
    document = json.loads(shown("busybox"))[0]
    assert document["Id"] == image_id and document["RootFS"]["Layers"]
    # image inspect -f, as docker image inspect
    template = "{{.Architecture}} {{len .RootFS.Layers}}"
    assert ok(carte.client("image", "inspect", "-f", template, "busybox")).split()[1] == "1"
    # --type narrows; a name nothing has: [] on stdout, one line, exit 1
    wrong = carte.client("inspect", "--type", "image", "box")
    assert wrong.returncode == 1 and wrong.stdout.strip() == "[]"
    assert 'image "box" not found' in wrong.stderr
    missing = carte.client("inspect", "nothing")
    assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1
    assert 'no such object: "nothing"' in missing.stderr
    only = carte.client("container", "inspect", "busybox")
    assert only.returncode == 1 and "no such container" in only.stderr


def test_port_shows_the_bound_host_ports(carte: Daemon) -> None:
    ok(carte.client(
        "run", "-d", "--name", "pub", "-p", "80", "-p", "127.0.0.1::81/udp", "busybox",
        "httpd", "-f", "-p", "80",
    ))  # fmt: skip
    listed = ok(carte.client("port", "pub")).splitlines()
    assert len(listed) == 2
    tcp = ok(carte.client("port", "pub", "80")).strip()
    address, _, host_port = tcp.rpartition(":")
    assert address == "0.0.0.0" and int(host_port) > 0
    assert f"80/tcp -> {tcp}" in listed
    udp = ok(carte.client("port", "pub", "81/udp")).strip()
    assert udp.startswith("127.0.0.1:") and not udp.endswith(":0")
    # the same ports in inspect, as docker inspect gives them
    template = '{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}'
    assert ok(carte.client("inspect", "-f", template, "pub")).strip() == host_port
    asked = '{{(index (index .HostConfig.PortBindings "80/tcp") 0).HostPort}}'
    assert ok(carte.client("inspect", "-f", asked, "pub")).strip() == ""
    # the port really answers on the host
    with socket.create_connection(("127.0.0.1", int(host_port)), timeout=5) as connection:
        connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert connection.recv(12).startswith(b"HTTP/1.")
    unpublished = carte.client("port", "pub", "82")
    assert unpublished.returncode == 1
    assert unpublished.stderr.strip() == "carte: no public port '82/tcp' published for pub"
