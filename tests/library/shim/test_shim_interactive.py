"""Exec, attach, terminals, resize, live log rotation and --init, through a real shim."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from shim_lab import ShimLab, wait_for
from support.terminal import read_until

from carte.runtime.logs import LogFollower, read_logs
from carte.runtime.shim.client import (
    ShimClient,
    ShimError,
)

PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def _process(*args: str, terminal: bool = False) -> dict[str, Any]:
    return {"args": list(args), "env": [PATH_ENV], "cwd": "/", "terminal": terminal}


def _collect_output(client: ShimClient, until: bytes | None = None) -> tuple[bytes, dict[str, Any]]:
    """Attach events until the exit event (or until `until` appears); output and last event."""
    output = b""
    last: dict[str, Any] = {}
    for event in client.events():
        last = event
        if event.get("event") == "output":
            output += event["data"]
            if until is not None and until in output:
                break
    return output, last


def test_exec_runs_inside_the_container_with_its_own_stdio(shim_lab: ShimLab) -> None:
    container_id, report = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    client = shim_lab.client(container_id)
    client.start()
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    execer = shim_lab.client(container_id)
    script = "read line; echo $line; hostname; echo oops >&2; exit 4"
    pid, master = execer.exec(_process("sh", "-c", script), (stdin_r, stdout_w, stderr_w))
    for fd in (stdin_r, stdout_w, stderr_w):
        os.close(fd)
    assert pid > 0 and master == -1
    # it waits for stdin, inside the container's pid namespace
    assert os.readlink(f"/proc/{report['pid']}/ns/pid") == os.readlink(f"/proc/{pid}/ns/pid")
    os.write(stdin_w, b"from-stdin\n")
    os.close(stdin_w)
    assert execer.wait_exec() == 4
    with os.fdopen(stdout_r, "rb") as out, os.fdopen(stderr_r, "rb") as err:
        assert out.read() == b"from-stdin\ncarte\n"  # the container's hostname, not ours
        assert err.read() == b"oops\n"


def _capabilities(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return status.split("CapEff:")[1].split()[0]


def test_exec_gets_the_containers_privileges_unless_told_otherwise(shim_lab: ShimLab) -> None:
    container_id, report = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    shim_lab.client(container_id).start()
    hold_r, hold_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    execer = shim_lab.client(container_id)
    try:
        pid, _ = execer.exec(_process("cat"), (hold_r, null, null))
        wait_for(lambda: Path(f"/proc/{pid}/comm").read_text() == "cat\n", "cat to run")
        # the container's capability set, not the full set the shim itself has
        assert _capabilities(pid) == _capabilities(report["pid"])
        assert _capabilities(pid) != _capabilities(os.getpid())
    finally:
        for fd in (hold_r, hold_w, null):
            os.close(fd)
    assert execer.wait_exec() == 0


def test_exec_into_a_stopped_container_is_refused(shim_lab: ShimLab) -> None:
    container_id, _ = shim_lab.create(shim_lab.bundle(["true"]))
    client = shim_lab.client(container_id)
    client.start()
    client.wait()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with pytest.raises(ShimError, match="not running"):
            client.exec(_process("true"), (null, null, null))
    finally:
        os.close(null)


def test_exec_of_a_missing_program_exits_126_as_docker_exec(shim_lab: ShimLab) -> None:
    container_id, _ = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    client = shim_lab.client(container_id)
    client.start()
    out_r, out_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    execer = shim_lab.client(container_id)
    execer.exec(_process("no-such-program"), (null, out_w, out_w))
    os.close(out_w)
    os.close(null)
    assert execer.wait_exec() == 126
    with os.fdopen(out_r, "rb") as out:
        assert b"executable file not found" in out.read()


def test_attach_streams_output_and_feeds_stdin(shim_lab: ShimLab) -> None:
    script = "echo ready; read line; echo got $line; echo bye >&2; exit 6"
    container_id, _ = shim_lab.create(shim_lab.bundle(["sh", "-c", script]), stdin=True)
    attached = shim_lab.client(container_id)
    assert attached.attach()["status"] == "created"
    shim_lab.client(container_id).start()
    output, _ = _collect_output(attached, until=b"ready\n")
    assert output == b"ready\n"
    attached.write_stdin(b"hello\n")
    attached.close_stdin()
    streams: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    last: dict[str, Any] = {}
    for event in attached.events():
        last = event
        if event.get("event") == "output":
            streams[event["stream"]] += event["data"]
    assert streams == {"stdout": b"got hello\n", "stderr": b"bye\n"}
    assert last["event"] == "exit" and last["exit_code"] == 6


def test_terminal_container_through_its_pty_with_resize(shim_lab: ShimLab) -> None:
    bundle = shim_lab.bundle(["sh"], terminal=True)
    container_id, _ = shim_lab.create(bundle)
    attached = shim_lab.client(container_id)
    attached.attach()
    control = shim_lab.client(container_id)
    control.start()
    control.resize(33, 101)
    attached.write_stdin(b"tty; stty size; echo $((6*7))\n")
    output, _ = _collect_output(attached, until=b"42\r\n")
    assert b"/dev/pts/0\r\n" in output  # a pty of the container's own devpts
    assert b"33 101\r\n" in output
    attached.write_stdin(b"exit 7\n")
    _, last = _collect_output(attached)
    assert last["exit_code"] == 7
    logged = "".join(e.text for e in read_logs(str(shim_lab.log_path(container_id))))
    assert "42" in logged


def test_resize_without_a_terminal_is_refused(shim_lab: ShimLab) -> None:
    container_id, _ = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    with pytest.raises(ShimError, match="no terminal"):
        shim_lab.client(container_id).resize(10, 10)


def test_exec_with_a_terminal_hands_over_the_pty_master(shim_lab: ShimLab) -> None:
    container_id, _ = shim_lab.create(shim_lab.bundle(["sleep", "100"]))
    shim_lab.client(container_id).start()
    execer = shim_lab.client(container_id)
    _, master = execer.exec(_process("sh", terminal=True))
    assert master >= 0
    try:
        os.write(master, b"tty; exit 3\n")
        assert b"/dev/pts/" in read_until(master, b"/dev/pts/")
        assert execer.wait_exec() == 3
    finally:
        os.close(master)


def test_log_rotation_while_running_and_follow_across_it(shim_lab: ShimLab) -> None:
    script = 'i=0; while [ $i -lt 400 ]; do echo "line $i"; i=$((i+1)); usleep 1000; done'
    container_id, _ = shim_lab.create(
        shim_lab.bundle(["sh", "-c", script]), log_max_size=4096, log_max_file=3
    )
    log = shim_lab.log_path(container_id)
    follower = LogFollower(str(log))
    client = shim_lab.client(container_id)
    client.start()
    seen: list[str] = [entry.text for entry in follower.backlog()]
    exited = False
    while not exited:
        exited = (log.parent / "state" / container_id / "exit.json").exists()
        seen.extend(entry.text for entry in follower.poll())
        time.sleep(0.005)
    seen.extend(entry.text for entry in follower.poll())
    follower.close()
    assert client.wait()["exit_code"] == 0
    assert seen == [f"line {n}\n" for n in range(400)]
    rotated = sorted(path.name for path in log.parent.glob(f"{container_id}.log*"))
    assert rotated == [f"{container_id}.log", f"{container_id}.log.1", f"{container_id}.log.2"]
    assert all(path.stat().st_size < 4096 + 200 for path in log.parent.glob(f"{log.name}*"))


def test_init_forwards_sigterm_and_is_pid_1(shim_lab: ShimLab) -> None:
    script = 'echo "pid $$"; trap "echo got-term; exit 9" TERM; while :; do usleep 10000; done'
    bundle = shim_lab.bundle(["sh", "-c", script], init=True)
    container_id, _ = shim_lab.create(bundle)
    client = shim_lab.client(container_id)
    client.start()
    log = shim_lab.log_path(container_id)
    wait_for(lambda: "pid" in log.read_text(), "the script to start")
    client.kill(signal.SIGTERM)
    assert client.wait()["exit_code"] == 9
    texts = [entry.text for entry in read_logs(str(log))]
    assert texts[0] != "pid 1\n", "with --init the command is not pid 1"
    assert texts[-1] == "got-term\n"


def test_init_reaps_orphans_in_the_container(shim_lab: ShimLab) -> None:
    script = (
        "for i in 1 2 3; do (sh -c 'exit 0' &); done; usleep 200000; ps -o stat,pid,comm; exit 0"
    )
    bundle = shim_lab.bundle(["sh", "-c", script], init=True)
    container_id, _ = shim_lab.create(bundle)
    client = shim_lab.client(container_id)
    client.start()
    assert client.wait()["exit_code"] == 0
    table = [entry.text.split() for entry in read_logs(str(shim_lab.log_path(container_id)))]
    assert table[0][0] == "STAT"
    assert [row for row in table[1:] if row[0].startswith("Z")] == [], table


def test_ctrl_c_on_a_terminal_reaches_the_command_under_init(shim_lab: ShimLab) -> None:
    """With --init and a terminal, ^C interrupts the command (the terminal's foreground
    process group), not init, and the exit code is 130 as in Docker."""
    bundle = shim_lab.bundle(["sh", "-c", "echo ready; exec sleep 100"], terminal=True, init=True)
    container_id, _ = shim_lab.create(bundle)
    attached = shim_lab.client(container_id)
    attached.attach()
    shim_lab.client(container_id).start()
    _collect_output(attached, until=b"ready")
    attached.write_stdin(b"\x03")
    _, last = _collect_output(attached)
    assert last["event"] == "exit" and last["exit_code"] == 130


def _children_command_lines(pid: int, seen: set[str], stop: threading.Event) -> None:
    """Collect the command lines of `pid`'s children until `stop` is set."""
    while not stop.is_set():
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return
        for child in children:
            try:
                seen.add(Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass


@pytest.mark.parametrize("made_by", ["launcher", "factory"])
def test_exec_forks_the_shim_rather_than_starting_an_interpreter(
    shim_lab: ShimLab, made_by: str
) -> None:
    """The helper that enters the container is a fork of the shim (it shows as the shim), not a
    new `carte shim exec` interpreter, which cost every health probe 60-80 ms of CPU."""
    bundle = shim_lab.bundle(["sleep", "100"])
    if made_by == "factory":
        with shim_lab.factory() as (_, socket_path):
            container_id, report = shim_lab.create_with_factory(socket_path, bundle)
    else:
        container_id, report = shim_lab.create(bundle)
    shim_pid = int(report["shim_pid"])
    shim_lab.client(container_id).start()
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_children_command_lines, args=(shim_pid, seen, stop))
    watcher.start()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for _ in range(5):
            execer = shim_lab.client(container_id)
            execer.exec(_process("true"), (null, null, null))
            assert execer.wait_exec() == 0
    finally:
        stop.set()
        watcher.join()
        os.close(null)
    assert not [line for line in seen if " shim exec " in line]
    assert f"carte-shim -id {container_id}" in {line.strip() for line in seen}
