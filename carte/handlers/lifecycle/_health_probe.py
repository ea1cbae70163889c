"""Health checks of one container: the probe command, Docker's state machine, and the timer loop.

Docker's rules, kept here: the first probe runs one interval after the start; a success makes
the container healthy and clears the failing streak; a failure during the start period (while
still "starting") does not count; after it, `retries` failures in a row make it unhealthy. The
last five probe results are kept. Nothing here knows the bus: the handler gives `watch_health`
a probe function and a report function, so tests drive it with a mock clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import trio

from carte.api.containers import Health, HealthConfig, HealthLogEntry

KEPT_RESULTS = 5
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3

Probe = Callable[[], Awaitable[HealthLogEntry | None]]
"""Run the check once; None when it could not run for a reason that is no result (paused)."""
Report = Callable[[Health, bool], Awaitable[None]]
"""Called after every probe with the new health and whether its status changed."""


def probe_command(test: list[str]) -> list[str] | None:
    """The argv a healthcheck `test` runs, or None when there is nothing to run.

    ["CMD", arg...] runs the arguments; ["CMD-SHELL", "cmd"] runs `/bin/sh -c cmd`; ["NONE"],
    an empty test or an unknown form runs nothing (the check is disabled).
    """
    if not test:
        return None
    kind, args = test[0], test[1:]
    if kind == "CMD" and args:
        return list(args)
    if kind == "CMD-SHELL" and args:
        return ["/bin/sh", "-c", " ".join(args)]
    return None


class HealthTracker:
    """Docker's health state machine for one run of a container.

    `started_at` is the (trio clock) time the container started; the start period counts from
    it. A tracker may continue from an earlier `Health` (a daemon that re-adopted a running
    container), and then the start period is over once the status is settled.
    """

    def __init__(self, check: HealthConfig, started_at: float, health: Health | None = None):
        self.check = check
        self.started_at = started_at
        self.retries = check.retries if check.retries > 0 else DEFAULT_RETRIES
        self.health = health if health is not None else Health(status="starting")

    def record(self, entry: HealthLogEntry, now: float) -> bool:
        """Take one probe result at time `now`; True when the status changed."""
        before = self.health.status
        streak = self.health.failing_streak
        status = before
        if entry.exit_code == 0:
            streak, status = 0, "healthy"
        elif not (before == "starting" and now - self.started_at < self.check.start_period):
            streak += 1
            if streak >= self.retries:
                status = "unhealthy"
        log = [*self.health.log, entry][-KEPT_RESULTS:]
        self.health = msgspec.structs.replace(
            self.health, status=status, failing_streak=streak, log=log
        )
        return status != before


async def watch_health(
    check: HealthConfig, probe: Probe, report: Report, *, health: Health | None = None
) -> None:
    """Probe every `check.interval` seconds forever (every `check.start_interval` seconds
    during the start period while still starting), reporting after each probe.

    Reports the initial state first (changed=True unless continuing from `health`). Runs until
    cancelled (the container exited); an exception from `probe` or `report` propagates.
    """
    interval = check.interval if check.interval > 0 else DEFAULT_INTERVAL
    tracker = HealthTracker(check, trio.current_time(), health)
    await report(tracker.health, health is None)
    while True:
        starting = trio.current_time() - tracker.started_at < check.start_period
        early = starting and tracker.health.status == "starting" and check.start_interval > 0
        await trio.sleep(check.start_interval if early else interval)
        entry = await probe()
        if entry is None:
            continue
        changed = tracker.record(entry, trio.current_time())
        await report(tracker.health, changed)
