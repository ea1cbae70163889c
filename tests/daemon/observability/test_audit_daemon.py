"""The audit log against a real daemon: `carte run` and a failed `carte rm nope` are written
with the caller's uid (SO_PEERCRED) and the status it got, reads are not; the user nobody
can read neither the log nor its directory; past the configured size the log is rotated and
the oldest file beyond ``audit_keep`` dropped. Calls on the Docker API socket are written
too, with the pid of the `docker` CLI that made them (relayed through the socket's front).

The log is put (``handlers.options.api.audit_log``) in a directory everyone may enter, so
its own modes (file 0600, directory 0700) are what keeps nobody out."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

MAX_BYTES = 8192
KEEP = 2


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    """A directory everyone may enter, for the audit log and the Docker API socket."""
    made = Path(tempfile.mkdtemp(prefix="carte-audit-", dir="/tmp"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="module")
def audit_log(place: Path) -> Path:
    return place / "audit" / "audit.log"


@pytest.fixture(scope="module")
def daemon(busybox_tar: Path, place: Path, audit_log: Path) -> Iterator[Daemon]:
    config = (
        "handlers:\n  options:\n    api:\n"
        f"      {{audit_log: {audit_log}, audit_max_bytes: {MAX_BYTES}, audit_keep: {KEEP}}}\n"
        f"    docker: {{socket: {place / 'docker.sock'}}}\n"
    )
    with ModuleDaemon(busybox_tar, config=config) as module:
        yield module.daemon


def entries(log: Path) -> list[dict[str, Any]]:
    """Every entry of the log and its rotated files, oldest first."""
    files = [log.with_name(f"{log.name}.{n}") for n in range(KEEP, 0, -1)] + [log]
    return [json.loads(line) for f in files if f.exists() for line in f.read_text().splitlines()]


def test_state_changes_are_written_with_who_and_status(daemon: Daemon, audit_log: Path) -> None:
    ok(daemon.client("run", "-d", "--name", "audited", "busybox", "sleep", "300"))
    ok(daemon.client("ps"))
    ok(daemon.client("inspect", "audited"))
    failed = daemon.client("rm", "nope")
    assert failed.returncode != 0

    def written() -> list[dict[str, Any]]:
        return [e for e in entries(audit_log) if e["object"] in ("audited", "nope")]

    wait_for(lambda: any(e["object"] == "nope" for e in written()), 10, "the rm in the log")
    seen = written()
    made = [e for e in seen if e["object"] == "audited"]
    assert made and all(200 <= e["status"] < 300 for e in made), made
    (removal,) = [e for e in seen if e["object"] == "nope"]
    assert removal["status"] == 404 and removal["method"] == "POST", removal
    assert removal["route"] == "/v1/commands/<name>"
    assert removal["path"] == "/v1/commands/RemoveContainer"
    for entry in seen:
        assert entry["who"]["transport"] == "unix" and entry["who"]["uid"] == 0, entry
        assert entry["who"]["gid"] == 0 and entry["who"]["pid"] > 0, entry
        assert entry["time"].endswith("+00:00") and entry["duration"] >= 0
    assert not [e for e in entries(audit_log) if e["method"] in ("GET", "HEAD")]
    ok(daemon.client("rm", "-f", "audited"))


def test_docker_api_calls_are_written_with_the_clients_pid(
    daemon: Daemon, place: Path, audit_log: Path
) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{place / 'docker.sock'}"}
    env["DOCKER_CONFIG"] = "/nonexistent"
    argv = ["docker", "create", "--name", "dock-audited", "busybox", "sleep", "300"]
    create = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, errors = create.communicate(timeout=30)
    assert create.returncode == 0, errors
    start = subprocess.run(["docker", "start", "dock-nope"], env=env, capture_output=True)
    assert start.returncode != 0

    def docker() -> list[dict[str, Any]]:
        return [e for e in entries(audit_log) if e["api"] == "docker"]

    wait_for(lambda: any(e["object"] == "dock-nope" for e in docker()), 10, "the start")
    (created,) = [e for e in docker() if e["object"] == "dock-audited"]
    assert (created["route"], created["status"]) == ("/containers/create", 201), created
    assert created["who"] == {"transport": "unix", "uid": 0, "gid": 0, "pid": create.pid}
    (refused,) = [e for e in docker() if e["object"] == "dock-nope"]
    assert (refused["route"], refused["status"]) == ("/containers/<ref>/start", 404), refused
    ok(daemon.client("rm", "-f", "dock-audited"))


def test_nobody_cannot_read_the_log(daemon: Daemon, audit_log: Path) -> None:
    daemon.request("POST", "/v1/commands/RemoveContainer", {"ref": "to-read"})
    wait_for(audit_log.exists, 10, "the audit log")
    assert stat.S_IMODE(audit_log.stat().st_mode) == 0o600
    assert stat.S_IMODE(audit_log.parent.stat().st_mode) == 0o700
    for argv in (["cat", str(audit_log)], ["ls", str(audit_log.parent)]):
        read = subprocess.run(
            ["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, check=False
        )
        assert read.returncode != 0 and "Permission denied" in read.stderr, read


def test_the_log_is_rotated_at_its_size(daemon: Daemon, audit_log: Path) -> None:
    # about 250 bytes an entry: 160 refused removals fill the log and both old files, twice
    for number in range(160):
        reply = daemon.request("POST", "/v1/commands/RemoveContainer", {"ref": f"rot{number}"})
        assert reply.status == 404
    wait_for(lambda: entries(audit_log)[-1]["object"] == "rot159", 10, "the last removal")
    old = [audit_log.with_name(f"{audit_log.name}.{n}") for n in range(1, KEEP + 2)]
    assert [f.exists() for f in old] == [True] * KEEP + [False]
    for f in (audit_log, *old[:KEEP]):
        assert 0 < f.stat().st_size <= MAX_BYTES, f
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    kept = [e["object"] for e in entries(audit_log) if e["object"].startswith("rot")]
    assert kept == [f"rot{n}" for n in range(160 - len(kept), 160)]  # the newest, in order
    assert len(kept) < 160  # the oldest went with the file beyond audit_keep
