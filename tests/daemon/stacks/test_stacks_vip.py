"""Rolling updates behind the service's VIP (the services handler balances over ready
replicas): a client looping without pause on VIP:80 sees zero failed requests during a
start-first update, a stop-first update, and an update whose readiness never passes (which
rolls back by itself)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from support.containers import ok
from support.daemon import Daemon
from support.web import http_get
from test_stacks_daemon import HTTP_PROBE, NEVER_PROBE, ready_count, wait_for, web, write


def vip(carte: Daemon) -> str:
    """The services handler's VIP: the top usable address of the stack network."""
    network = json.loads(ok(carte.client("--format", "json", "network", "inspect", "demo_default")))
    if isinstance(network, list):
        network = network[0]
    return str(IPv4Network(network["subnet"]).broadcast_address - 1)


def wait_serving(address: str, tag: str, timeout: float) -> None:
    def serving() -> bool:
        try:
            return http_get(address).startswith(tag)
        except OSError:
            return False

    wait_for(serving, timeout, f"VIP {address} serving {tag}")


def update_under_load(carte: Daemon, address: str, update: Callable[[], None]) -> list[str]:
    """Run `update` while a client sends requests to VIP:80 without pause (at most 20000);
    the failures it saw."""
    done = threading.Event()
    failures: list[str] = []
    count = [0]

    def client() -> None:
        while not done.is_set() and count[0] < 20000:
            try:
                http_get(address)
            except OSError as error:
                failures.append(str(error))
            count[0] += 1

    thread = threading.Thread(target=client)
    thread.start()
    try:
        update()
    finally:
        done.set()
        thread.join()
    assert count[0] > 20, f"only {count[0]} requests were sent"
    return failures


# Was intermittent: about one run in three on a loaded 2-core machine lost one request during
# the rollout (a timeout or a reset). The likely cause, a replacement handed the old replica's
# address while its conntrack and neighbour entries were being forgotten, is gone (9d6bed3:
# 6 of 6 runs passed without a rerun since). One rerun stays, which must itself see zero
# failures: under heavy load a new replica's readiness can also time out and roll back.
@pytest.mark.flaky(reruns=1)
@pytest.mark.slow
@pytest.mark.parametrize("order", ["start-first", "stop-first"])
def test_rolling_update_through_vip_zero_failures(
    carte: Daemon, tmp_path: Path, order: str
) -> None:
    write(tmp_path, web(tag="v1", replicas=3, order=order))
    ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "demo"))
    wait_for(ready_count(carte, 3), 30, "3 ready")
    address = vip(carte)
    wait_serving(address, "v1", 10)

    def update() -> None:
        write(tmp_path, web(tag="v2", replicas=3, order=order, probe=HTTP_PROBE))
        ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "demo"))
        status = carte.client("rollout", "status", "demo_web", "--timeout", "90", timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr

    failures = update_under_load(carte, address, update)
    assert failures == [], f"{len(failures)} failed: {failures[:3]}"
    assert http_get(address).startswith("v2 ")


@pytest.mark.slow
def test_update_that_never_gets_ready_rolls_back_with_zero_failures(
    carte: Daemon, tmp_path: Path
) -> None:
    write(tmp_path, web(tag="v1", replicas=2))
    ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "demo"))
    wait_for(ready_count(carte, 2), 30, "2 ready")
    address = vip(carte)
    wait_serving(address, "v1", 10)

    def update() -> None:
        write(tmp_path, web(tag="v2", replicas=2, probe=NEVER_PROBE))
        ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "demo"))
        status = carte.client("rollout", "status", "demo_web", "--timeout", "90", timeout=120)
        assert status.returncode == 1 and "rolled_back" in status.stdout, status.stdout
        time.sleep(0.5)

    failures = update_under_load(carte, address, update)
    assert failures == [], f"{len(failures)} failed: {failures[:3]}"
    assert http_get(address).startswith("v1 ")
