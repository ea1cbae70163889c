"""Health checks against a real daemon: a probe that tests a file inside the container, which
the test removes with `carte exec`; the states show in inspect, ps and `carte events`."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from lifecycle_lab import NO_NET, event_lines, exec_ok
from support.containers import inspect, ok, run_detached, wait_for
from support.daemon import Daemon

SERVE = ["sh", "-c", "touch /tmp/ok; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
FAST = ["--health-interval", "0.2s", "--health-timeout", "2s", "--health-retries", "2"]


def _health(daemon: Daemon, ref: str) -> dict[str, Any]:
    health = inspect(daemon, ref)["state"]["health"]
    assert health is not None, "inspect shows no health for a container with a healthcheck"
    return dict(health)


def _status_is(daemon: Daemon, ref: str, status: str) -> bool:
    return bool(_health(daemon, ref)["status"] == status)


def test_health_goes_starting_healthy_unhealthy(carte: Daemon) -> None:
    container_id = run_detached(
        carte,
        *NO_NET,
        "--name",
        "probed",
        "--health-cmd",
        "test -e /tmp/ok",
        *FAST,
        "busybox",
        *SERVE,
    )
    wait_for(lambda: _status_is(carte, "probed", "healthy"), what="healthy")
    assert "(healthy)" in ok(carte.client("ps", "--filter", "name=probed"))
    exec_ok(carte, "probed", "rm", "/tmp/ok")
    wait_for(lambda: _status_is(carte, "probed", "unhealthy"), what="unhealthy")
    health = _health(carte, "probed")
    assert health["failing_streak"] >= 2
    log = health["log"]
    assert isinstance(log, list) and 0 < len(log) <= 5
    assert log[-1]["exit_code"] == 1
    assert "(unhealthy)" in ok(carte.client("ps", "--filter", "name=probed"))

    changes = _health_events(carte, container_id, until="unhealthy")
    assert changes[:3] == ["starting", "healthy", "unhealthy"]
    lines = event_lines(
        carte, "--since", "0", "--filter", "type=container.health", until="unhealthy"
    )
    assert all("HealthChanged" in line and container_id in line for line in lines)


def test_start_period_failures_do_not_count(carte: Daemon) -> None:
    run_detached(
        carte,
        *NO_NET,
        "--name",
        "slowstart",
        "--health-cmd",
        "test -e /tmp/ready",
        *FAST,
        "--health-start-period",
        "60s",
        "busybox",
        *SERVE,
    )
    wait_for(lambda: len(_health(carte, "slowstart")["log"]) >= 4, what="four probes")
    health = _health(carte, "slowstart")
    assert health["status"] == "starting" and health["failing_streak"] == 0
    exec_ok(carte, "slowstart", "touch", "/tmp/ready")
    wait_for(lambda: _status_is(carte, "slowstart", "healthy"), what="healthy")


def test_probes_stop_when_the_container_stops_and_restart_with_it(carte: Daemon) -> None:
    run_detached(
        carte,
        *NO_NET,
        "--name",
        "stopper",
        "--health-cmd",
        "test -e /tmp/ok",
        *FAST,
        "busybox",
        *SERVE,
    )
    wait_for(lambda: _status_is(carte, "stopper", "healthy"), what="healthy")
    ok(carte.client("stop", "stopper"))
    probes = len(_health(carte, "stopper")["log"])
    subprocess.run(["sleep", "0.8"], check=True)  # four intervals without a probe
    assert len(_health(carte, "stopper")["log"]) == probes
    ok(carte.client("start", "stopper"))
    wait_for(lambda: _status_is(carte, "stopper", "healthy"), what="healthy again")


def test_no_healthcheck_means_no_health(carte: Daemon) -> None:
    run_detached(carte, *NO_NET, "--name", "plain", "busybox", *SERVE)
    assert inspect(carte, "plain")["state"].get("health") in (
        None,
        {"status": "none", "failing_streak": 0, "log": []},
    )


def _health_events(daemon: Daemon, container_id: str, until: str) -> list[str]:
    seen: list[str] = []
    for event in daemon.stream("/v1/events?since=0&type=HealthChanged", timeout=5):
        if event["id"] == container_id:
            seen.append(event["status"])
            if event["status"] == until:
                break
    return seen


def test_image_healthcheck_is_used_and_no_healthcheck_disables_it(
    carte: Daemon, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nHEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD test -e /tmp/ok\n"
    )
    ok(carte.client("build", "-t", "checked", str(tmp_path), timeout=120))
    run_detached(carte, *NO_NET, "--name", "imagecheck", "checked", *SERVE)
    check = inspect(carte, "imagecheck")["config"]["healthcheck"]
    assert check["test"] == ["CMD-SHELL", "test -e /tmp/ok"] and check["interval"] == 1
    wait_for(lambda: _status_is(carte, "imagecheck", "healthy"), what="healthy")
    run_detached(carte, *NO_NET, "--name", "unchecked", "--no-healthcheck", "checked", *SERVE)
    time.sleep(1.5)  # longer than the image's interval
    health = inspect(carte, "unchecked")["state"].get("health")
    assert health is None or health["status"] == "none"


def test_probes_go_on_after_a_daemon_sigkill(carte: Daemon) -> None:
    run_detached(
        carte,
        *NO_NET,
        "--name",
        "adopted",
        "--health-cmd",
        "test -e /tmp/ok",
        *FAST,
        "busybox",
        *SERVE,
    )
    wait_for(lambda: _status_is(carte, "adopted", "healthy"), what="healthy")
    carte.stop(signal.SIGKILL)
    carte.start()
    assert _status_is(carte, "adopted", "healthy")  # kept, not back to "starting"
    last = _health(carte, "adopted")["log"][-1]["end"]
    wait_for(lambda: _health(carte, "adopted")["log"][-1]["end"] != last, what="a new probe")
    exec_ok(carte, "adopted", "rm", "/tmp/ok")
    wait_for(lambda: _status_is(carte, "adopted", "unhealthy"), what="unhealthy")
