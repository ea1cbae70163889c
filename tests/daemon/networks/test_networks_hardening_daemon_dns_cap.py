"""The DNS forwarder's bound is `network.dns_max_inflight` in carte.yaml (issue 11; it was a
constant of 256): a daemon with a bound of 4 and a silent upstream answers the 5th and later
queries of a flood SERVFAIL at once, on a bridge's gateway; a bound below 1 is refused in one
line naming the file, the line and the key."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from networks_lab import network
from support.containers import ok
from support.daemon import DaemonFactory

from carte.engine.config import ConfigError, OptionsSpec, parse_config
from carte.handlers.network import NetworkHandler

SERVFAIL = 2
BOUND = 4


def query(ident: int) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"\x07example\x03org\0\0\1\0\1"


def test_a_bound_below_one_is_refused() -> None:
    spec = OptionsSpec("network", NetworkHandler.Options, "network")
    with pytest.raises(ConfigError) as caught:
        parse_config("network:\n  dns_max_inflight: 0\n", "carte.yaml", [spec])
    assert str(caught.value).startswith("carte.yaml:2: "), caught.value
    assert "dns_max_inflight" in str(caught.value)


def test_the_daemon_forwards_at_most_its_bound(daemons: DaemonFactory, busybox_tar: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        upstream = f"127.0.0.1:{silent.getsockname()[1]}"
        carte = daemons(
            config=(
                f'network:\n  pools: ["10.84.0.0/16:24"]\n  dns_upstreams: ["{upstream}"]\n'
                f"  dns_upstream_timeout: 5\n  dns_max_inflight: {BOUND}\n"
            )
        )
        ok(carte.client("import", str(busybox_tar), "busybox"))
        made = ok(carte.client("run", "-d", "busybox", "sleep", "60")).strip()
        try:
            gateway = network(carte, "bridge")["gateway"]  # the default network's
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                flood = 40
                for ident in range(flood):
                    client.sendto(query(ident), (gateway, 53))
                client.settimeout(1.0)  # well under the 5 s upstream timeout
                answers: list[int] = []
                started = time.monotonic()
                while len(answers) < flood - BOUND and time.monotonic() - started < 2:
                    try:
                        answers.append(struct.unpack_from("!H", client.recv(512), 2)[0] & 0xF)
                    except TimeoutError:
                        break
            assert answers == [SERVFAIL] * (flood - BOUND), answers
        finally:
            ok(carte.client("rm", "-f", made))
