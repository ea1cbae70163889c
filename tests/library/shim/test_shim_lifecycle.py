"""A real shim on a real busybox container: logs, exit codes, wait, surviving its starter,
exit.json with nobody connected, delete, create failures, OOM, memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from shim_lab import ShimLab, process_alive, wait_for

from carte.api.errors import InvalidArgument, NotFound
from carte.runtime.logs import read_logs
from carte.runtime.shim.client import (
    ShimClient,
    ShimError,
    find_state,
    parse_report,
    read_exit_file,
    socket_path,
)


def test_output_goes_to_json_file_log_and_wait_returns_exit_code(shim_lab: ShimLab) -> None:
    bundle = shim_lab.bundle(["sh", "-c", "echo out; echo err >&2; echo -n tail; exit 3"])
    container_id, _ = shim_lab.create(bundle)
    client = shim_lab.client(container_id)
    assert client.state()["status"] == "created"
    assert client.start()["status"] == "running"
    record = client.wait()
    assert record["exit_code"] == 3
    assert record["oom_killed"] is False
    assert record["started_at"] <= record["finished_at"]
    entries = read_logs(str(shim_lab.log_path(container_id)))
    assert sorted((e.stream, e.text) for e in entries) == [
        ("stderr", "err\n"),
        ("stdout", "out\n"),
        ("stdout", "tail"),
    ]
    assert read_exit_file(shim_lab.state_dir, container_id) == record
    assert client.state()["status"] == "stopped"


def test_exit_codes_zero_and_sigkill(shim_lab: ShimLab) -> None:
    quick_id, _ = shim_lab.create(shim_lab.bundle(["true"]))
    quick = shim_lab.client(quick_id)
    quick.start()
    assert quick.wait()["exit_code"] == 0

    sleeper_id, report = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    sleeper = shim_lab.client(sleeper_id)
    sleeper.start()
    assert process_alive(report["pid"])
    sleeper.kill(signal.SIGKILL)
    assert sleeper.wait()["exit_code"] == 137
    with pytest.raises(ShimError, match="not running"):
        sleeper.kill(signal.SIGTERM)


def test_shim_outlives_its_starter(shim_lab: ShimLab) -> None:
    """The starter (standing in for the daemon) is SIGKILLed; the container keeps running and
    a new client later reads its real exit code."""
    container_id = shim_lab.new_id()
    command = shim_lab.command(container_id, shim_lab.bundle(["sleep", "100"]))
    starter_code = (
        "import subprocess, sys; "
        f"out = subprocess.run({command!r}, capture_output=True).stdout; "
        "sys.stdout.buffer.write(out); sys.stdout.flush(); "
        "import time; time.sleep(100)"
    )
    starter = subprocess.Popen([sys.executable, "-c", starter_code], stdout=subprocess.PIPE)
    assert starter.stdout is not None
    report = parse_report(starter.stdout.readline())
    shim_lab.shim_pids.append(report["shim_pid"])
    with shim_lab.client(container_id) as first:
        first.start()
    starter.kill()
    starter.wait()
    starter.stdout.close()
    assert process_alive(report["shim_pid"]) and process_alive(report["pid"])
    assert find_state(shim_lab.state_dir, container_id)["status"] == "running"
    later = shim_lab.client(container_id)
    assert later.state()["status"] == "running"
    os.kill(report["pid"], signal.SIGKILL)
    assert later.wait()["exit_code"] == 137


def test_exit_is_recorded_with_nobody_connected_and_shim_then_leaves(shim_lab: ShimLab) -> None:
    container_id, report = shim_lab.create(
        shim_lab.bundle(["sh", "-c", "sleep 0.2; exit 5"]), linger=0.2
    )
    with shim_lab.client(container_id) as client:
        client.start()
    wait_for(lambda: read_exit_file(shim_lab.state_dir, container_id), "exit.json")
    record = read_exit_file(shim_lab.state_dir, container_id)
    assert record is not None and record["exit_code"] == 5
    wait_for(lambda: not process_alive(report["shim_pid"]), "the idle shim to exit")
    assert not socket_path(shim_lab.state_dir, container_id).exists()
    # what a daemon that comes back finds
    assert find_state(shim_lab.state_dir, container_id) == {"status": "stopped", **record}
    with pytest.raises(NotFound, match="no running shim and no recorded exit"):
        find_state(shim_lab.state_dir, "h7-never-created")


def test_delete_refuses_a_running_container_unless_forced(shim_lab: ShimLab) -> None:
    container_id, report = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    client = shim_lab.client(container_id)
    client.start()
    with pytest.raises(ShimError, match="is running"):
        client.delete()
    client.delete(force=True)
    wait_for(lambda: not process_alive(report["shim_pid"]), "the shim to exit after delete")
    assert not process_alive(report["pid"])
    assert not (shim_lab.state_dir / container_id).exists()
    shim_lab.check_clean()


def test_kill_all_signals_every_process(shim_lab: ShimLab) -> None:
    # A container's pid 1 without a TERM handler is immune to TERM; its children are not,
    # so only a signal to all processes ends the pipeline and lets the script go on.
    # "started" comes from the pipeline's second process, forked after the first.
    script = "sleep 100 | (echo started; cat); echo child-ended; exit 4"
    container_id, _ = shim_lab.create(shim_lab.bundle(["sh", "-c", script]))
    client = shim_lab.client(container_id)
    client.start()
    log = shim_lab.log_path(container_id)
    wait_for(lambda: "started" in log.read_text(), "the script to start")
    client.kill(signal.SIGTERM, all_processes=True)
    assert client.wait()["exit_code"] == 4
    stdout = [e.text for e in read_logs(str(log)) if e.stream == "stdout"]
    assert stdout == ["started\n", "child-ended\n"]


def test_create_failure_is_one_line_and_leaves_nothing(shim_lab: ShimLab) -> None:
    container_id = shim_lab.new_id()
    bundle = shim_lab.tmp_path / "no-config"
    bundle.mkdir()
    result = subprocess.run(shim_lab.command(container_id, bundle), capture_output=True, timeout=30)
    assert result.returncode != 0
    assert result.stdout.count(b"\n") == 1 and result.stderr == b""
    with pytest.raises(InvalidArgument, match=r"config\.json"):
        parse_report(result.stdout)
    bad_flag = subprocess.run(
        [*shim_lab.command(container_id, bundle), "--log-max-file", "many"], capture_output=True
    )
    assert bad_flag.returncode == 2
    with pytest.raises(InvalidArgument, match="--log-max-file 'many' is not a number"):
        parse_report(bad_flag.stdout)
    shim_lab.check_clean()


def test_oom_kill_is_reported(shim_lab: ShimLab) -> None:
    bundle = shim_lab.bundle(["sh", "-c", 'x=a; while :; do x="$x$x"; done'], memory_limit=16 << 20)
    container_id, _ = shim_lab.create(bundle)
    client = shim_lab.client(container_id)
    client.start()
    record = client.wait()
    assert record["exit_code"] == 137
    assert record["oom_killed"] is True


def test_shim_memory_is_small(shim_lab: ShimLab) -> None:
    # A first shim compiles the monitor's .pyc files (in a fresh clone); measure a later one.
    warm_id, _ = shim_lab.create(shim_lab.bundle(["true"]))
    shim_lab.client(warm_id).start()
    container_id, report = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    client = shim_lab.client(container_id)
    client.start()
    client.state()
    status = Path(f"/proc/{report['shim_pid']}/status").read_text()
    rss_kb = int(status.split("VmRSS:")[1].split()[0])
    print(f"shim RSS: {rss_kb} kB")
    assert rss_kb <= 10 * 1024, f"shim RSS {rss_kb} kB is over 10 MB"
    client.kill(signal.SIGKILL)
    client.wait()


def test_unknown_op_and_bad_line_get_one_line_errors(shim_lab: ShimLab) -> None:
    container_id, _ = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    client = shim_lab.client(container_id)
    with pytest.raises(ShimError, match="unknown op 'bogus'"):
        client.request({"op": "bogus"})
    with ShimClient(socket_path(shim_lab.state_dir, container_id)) as raw:
        raw.sock.settimeout(20)
        raw.sock.sendall(b"this is not json\n")
        reply = raw.receive()
        assert reply["ok"] is False and "bad request" in reply["error"]
    assert client.state()["status"] == "created"
