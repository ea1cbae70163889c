"""Containers outlive the daemon: SIGKILL it, start a new one on the same directories, and the
containers are still there: running ones still running and manageable, one that exited while
no daemon ran has its real exit code and a ContainerExited fact."""

from __future__ import annotations

import signal
from pathlib import Path

from support.containers import inspect, ok, run_detached, wait_for
from support.daemon import Daemon


def _restart_daemon(daemon: Daemon) -> None:
    daemon.stop(signal.SIGKILL)
    daemon.start()


def test_running_container_survives_daemon_sigkill(carte: Daemon) -> None:
    container_id = run_detached(
        carte,
        "--name",
        "survivor",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
    )
    pid = inspect(carte, "survivor")["state"]["pid"]
    _restart_daemon(carte)
    assert "survivor" in ok(carte.client("ps"))
    state = inspect(carte, container_id)["state"]
    assert state["status"] == "running" and state["pid"] == pid
    assert "re-adopted container" in carte.log()
    ok(carte.client("stop", "survivor"))
    assert inspect(carte, "survivor")["state"]["exit_code"] == 0


def test_exit_while_the_daemon_is_down_keeps_its_code(carte: Daemon, tmp_path: Path) -> None:
    script = "while [ ! -e /signal/go ]; do sleep 0.05; done; exit 7"
    container_id = run_detached(
        carte, "--name", "leaver", "-v", f"{tmp_path}:/signal", "busybox", "sh", "-c", script
    )
    carte.stop(signal.SIGKILL)
    (tmp_path / "go").write_text("")
    exit_file = carte.run_root / "runtime" / container_id / "exit.json"
    wait_for(exit_file.exists, what="the shim's exit.json")
    carte.start()
    state = inspect(carte, "leaver")["state"]
    assert state["status"] == "exited" and state["exit_code"] == 7
    exited = [event for event in _journal(carte) if event["type"] == "ContainerExited"]
    assert exited and exited[-1]["id"] == container_id and exited[-1]["exit_code"] == 7
    ok(carte.client("rm", "leaver"))


def _journal(daemon: Daemon) -> list[dict[str, object]]:
    events = []
    for event in daemon.stream("/v1/events?since=0&type=container.exited", timeout=3):
        events.append(event)
        break
    return events
