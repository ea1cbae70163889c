"""Docker's health rules on a mock clock: the first probe one interval after the start, start
period, retries, recovery, the last five results kept, and the probe commands."""

from __future__ import annotations

import trio
import trio.testing

from carte.api.containers import Health, HealthConfig, HealthLogEntry
from carte.handlers.lifecycle._health_probe import HealthTracker, probe_command, watch_health


def _entry(code: int) -> HealthLogEntry:
    return HealthLogEntry(start="s", end="e", exit_code=code, output=f"exit {code}")


class Scripted:
    """Probe results in order (then the last one forever), with the time of every probe."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = codes
        self.times: list[float] = []
        self.reports: list[tuple[float, str, bool]] = []

    async def probe(self) -> HealthLogEntry | None:
        self.times.append(trio.current_time())
        code = self.codes[min(len(self.times) - 1, len(self.codes) - 1)]
        return _entry(code)

    async def report(self, health: Health, changed: bool) -> None:
        self.reports.append((trio.current_time(), health.status, changed))


async def _run_for(seconds: float, check: HealthConfig, script: Scripted) -> None:
    with trio.move_on_after(seconds):
        await watch_health(check, script.probe, script.report)


async def test_probes_every_interval_and_turns_unhealthy_after_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    check = HealthConfig(test=["CMD", "true"], interval=5, retries=3)
    script = Scripted([0, 0, 1, 1, 1, 0])
    await _run_for(31, check, script)
    assert script.times == [5, 10, 15, 20, 25, 30]
    changes = [(t, status) for t, status, changed in script.reports if changed]
    assert changes == [(0, "starting"), (5, "healthy"), (25, "unhealthy"), (30, "healthy")]


async def test_failures_in_the_start_period_do_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    check = HealthConfig(test=["CMD", "true"], interval=1, retries=1, start_period=4.5)
    script = Scripted([1, 1, 1, 1, 1])
    await _run_for(5.5, check, script)
    statuses = [status for _, status, _ in script.reports]
    # probes at 1..4 fail inside the start period; the one at 5 is outside and counts
    assert statuses == ["starting", "starting", "starting", "starting", "starting", "unhealthy"]


async def test_a_success_ends_the_start_period(autojump_clock: trio.testing.MockClock) -> None:
    check = HealthConfig(test=["CMD", "true"], interval=1, retries=1, start_period=100)
    script = Scripted([0, 1])
    await _run_for(2.5, check, script)
    assert [status for _, status, _ in script.reports] == ["starting", "healthy", "unhealthy"]


async def test_a_skipped_probe_changes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    reports: list[str] = []

    async def paused() -> HealthLogEntry | None:
        return None

    async def report(health: Health, changed: bool) -> None:
        reports.append(health.status)

    with trio.move_on_after(10.5):
        await watch_health(HealthConfig(test=["CMD", "x"], interval=1), paused, report)
    assert reports == ["starting"]


def test_tracker_keeps_the_last_five_results() -> None:
    tracker = HealthTracker(HealthConfig(test=["CMD", "x"], retries=3), started_at=0)
    for code in [0, 1, 2, 3, 4, 5, 6]:
        tracker.record(_entry(code), now=100)
    assert [entry.exit_code for entry in tracker.health.log] == [2, 3, 4, 5, 6]
    assert tracker.health.failing_streak == 6 and tracker.health.status == "unhealthy"


def test_tracker_continues_from_an_adopted_health() -> None:
    earlier = Health(status="unhealthy", failing_streak=4, log=[_entry(1)])
    tracker = HealthTracker(HealthConfig(test=["CMD", "x"], start_period=60), 0, earlier)
    assert tracker.record(_entry(1), now=1) is False
    assert tracker.health.failing_streak == 5
    assert tracker.record(_entry(0), now=2) is True
    assert tracker.health.status == "healthy" and tracker.health.failing_streak == 0


def test_zero_retries_means_dockers_default_of_three() -> None:
    tracker = HealthTracker(HealthConfig(test=["CMD", "x"], retries=0), started_at=0)
    assert [tracker.record(_entry(1), now=1) for _ in range(3)] == [False, False, True]


def test_probe_commands() -> None:
    assert probe_command(["CMD", "curl", "-f", "http://x/"]) == ["curl", "-f", "http://x/"]
    assert probe_command(["CMD-SHELL", "test -e /ok || exit 1"]) == [
        "/bin/sh",
        "-c",
        "test -e /ok || exit 1",
    ]
    assert probe_command(["NONE"]) is None
    assert probe_command([]) is None
    assert probe_command(["CMD"]) is None
