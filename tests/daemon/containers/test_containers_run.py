"""`carte run`, `create`, `start`, `ps`, `stop`, `kill`, `rm`, `wait` against a real daemon."""

from __future__ import annotations

import json

from support.containers import inspect, ok, wait_for
from support.daemon import Daemon
from support.leftovers import cgroup_dirs, container_leftovers


def test_run_prints_output_and_returns_the_exit_code(carte: Daemon) -> None:
    result = carte.client("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr
    assert ok(carte.client("ps", "-aq")) == ""


def test_run_rm_leaves_nothing_behind(carte: Daemon) -> None:
    created = ok(carte.client("create", "--rm", "busybox", "true")).strip()
    assert len(created) == 64
    assert ok(carte.client("start", created)).strip() == created
    wait_for(lambda: ok(carte.client("ps", "-aq")) == "", what="--rm removal")
    assert container_leftovers(carte, created) == []


def test_detached_container_in_ps_then_stop_and_rm(carte: Daemon) -> None:
    script = "trap 'exit 0' TERM; while true; do sleep 0.1; done"
    container_id = ok(
        carte.client("run", "-d", "--name", "web", "-l", "app=web", "busybox", "sh", "-c", script)
    ).strip()
    table = ok(carte.client("ps")).splitlines()
    assert table[0].split() == [
        "CONTAINER",
        "ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    assert table[1].startswith(container_id[:12])
    assert " Up " in table[1] and table[1].endswith("web")
    assert ok(carte.client("ps", "-q", "--filter", "label=app=web")).split() == [container_id[:12]]
    assert ok(carte.client("ps", "-q", "--filter", "label=app=db")) == ""
    both = ("--filter", "label=app=web", "--filter", "label=app=db")
    assert ok(carte.client("ps", "-q", *both)) == ""  # several labels must all match
    rows = [json.loads(line) for line in ok(carte.client("ps", "--format", "json")).splitlines()]
    assert rows[0]["name"] == "web" and rows[0]["state"] == "running"
    assert cgroup_dirs(container_id)

    refused = carte.client("rm", "web")
    assert refused.returncode == 1
    assert "stop the container before removing or force remove" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    assert ok(carte.client("stop", container_id[:8])).strip() == container_id[:8]
    state = inspect(carte, "web")["state"]
    assert state["status"] == "exited" and state["exit_code"] == 0
    assert "Exited (0)" in ok(carte.client("ps", "-a"))
    assert cgroup_dirs(container_id) == []
    ok(carte.client("rm", "web"))
    assert container_leftovers(carte, container_id) == []


def test_stop_timeout_kills_a_process_ignoring_term(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "stubborn", "busybox", "sleep", "100"))
    ok(carte.client("stop", "-t", "1", "stubborn"))
    assert inspect(carte, "stubborn")["state"]["exit_code"] == 137


def test_kill_with_signal_and_wait(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "k", "busybox", "sleep", "100"))
    ok(carte.client("kill", "-s", "KILL", "k"))
    assert ok(carte.client("wait", "k")).strip() == "137"


def test_name_conflict_is_409(carte: Daemon) -> None:
    ok(carte.client("create", "--name", "same", "busybox", "true"))
    again = carte.client("create", "--name", "same", "busybox", "true")
    assert again.returncode == 125
    assert 'container name "same" is already in use' in again.stderr
    assert len(ok(carte.client("ps", "-aq")).split()) == 1


def test_random_names_and_short_ids(carte: Daemon) -> None:
    ok(carte.client("create", "busybox", "true"))
    row = json.loads(ok(carte.client("ps", "-a", "--format", "json")))
    adjective, _, noun = row["name"].partition("_")
    assert adjective and noun
    assert ok(carte.client("ps", "-aq")).strip() == row["id"][:12]


def test_restart_runs_the_container_again(carte: Daemon) -> None:
    container_id = ok(carte.client("run", "-d", "busybox", "sh", "-c", "echo ran; sleep 100"))
    container_id = container_id.strip()
    first = inspect(carte, container_id)["state"]["started_at"]
    ok(carte.client("restart", "-t", "0", container_id))
    state = inspect(carte, container_id)["state"]
    assert state["status"] == "running" and state["started_at"] != first
    wait_for(lambda: ok(carte.client("logs", container_id)).count("ran") == 2, what="2nd run")


def test_events_for_every_state_change(carte: Daemon) -> None:
    ok(carte.client("run", "--rm", "--name", "ev", "busybox", "true"))
    seen = []
    for event in carte.stream("/v1/events?since=0&type=container", timeout=5):
        seen.append(event["type"])
        if event["type"] == "ContainerRemoved":
            break
    assert seen[:4] == [
        "ContainerCreated",
        "ContainerStarted",
        "ContainerExited",
        "ContainerRemoved",
    ]
