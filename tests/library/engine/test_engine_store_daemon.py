"""A real `carte daemon` keeping its state in a real etcd (store.backend: etcd in carte.yaml)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import DaemonFactory
from support.etcd import EtcdServer, etcd_server
from support.module_daemon import stop_and_clean

__all__ = ["etcd_server"]


@pytest.fixture
def factory() -> Iterator[DaemonFactory]:
    made = DaemonFactory()
    try:
        yield made
    finally:
        stop_and_clean(made)


def etcd_keys(server: EtcdServer, prefix: str) -> list[str]:
    start = prefix.encode()
    end = start[:-1] + bytes([start[-1] + 1])
    reply = server.call(
        "/v3/kv/range",
        {"key": base64.b64encode(start).decode(), "range_end": base64.b64encode(end).decode()},
    )
    return [base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs", [])]  # type: ignore[attr-defined]


def test_a_daemon_on_etcd_creates_and_lists_containers_kept_in_etcd(
    etcd_server: EtcdServer, factory: DaemonFactory, busybox_tar: Path
) -> None:
    config = f"store:\n  backend: etcd\n  endpoints: [{etcd_server.endpoint}]\n  prefix: t1/\n"
    daemon = factory(config=config)
    assert daemon.client("import", str(busybox_tar), "busybox").returncode == 0
    created = daemon.client("create", "--name", "on-etcd", "busybox", "true")
    assert created.returncode == 0, created.stderr
    container_id = created.stdout.strip()

    listed = daemon.client("ps", "-a", "--format", "{{.Names}} {{.Status}}")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["on-etcd", "Created"]
    assert f"t1/containers/{container_id}" in etcd_keys(etcd_server, "t1/")

    # the state is etcd's, not the daemon's: a restarted daemon lists it again
    daemon.stop()
    daemon.start()
    again = daemon.client("ps", "-a", "--format", "json")
    assert again.returncode == 0, again.stderr
    rows = [json.loads(line) for line in again.stdout.splitlines() if line.strip()]
    assert [(row["name"], row["status"]) for row in rows] == [("on-etcd", "Created")]
    assert daemon.client("rm", container_id).returncode == 0
    assert f"t1/containers/{container_id}" not in etcd_keys(etcd_server, "t1/")
    assert not (daemon.root / "state.db").exists()


def test_a_bad_store_section_stops_the_daemon_with_one_line(factory: DaemonFactory) -> None:
    daemon = factory(config="store:\n  backend: etcd\n", start=False)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(20) == 1
    lines = daemon.log().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(
        'carte.yaml:1: "store": backend "etcd" needs endpoints, e.g. endpoints: '
        '["http://127.0.0.1:2379"]; fix the section'
    ), lines
