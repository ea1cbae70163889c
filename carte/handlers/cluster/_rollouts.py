"""Rolling updates in a cluster: how many replicas of a service the leader's scheduler may
replace now, and the rollout's state (``cluster/rollouts/<stack>/<service>``).

Pure functions of the service's placement, its assignments, the agents' reports and the
time, as update_config says on one machine:

* a new replica counts as *updated* once it has been ready (at the new revision) for
  ``monitor`` seconds; until then it is in flight;
* at most ``parallelism`` replicas are in flight at a time (0: all at once), and the next
  one waits ``delay`` seconds after the last one that counted as updated;
* a new replica that exits, fails to start, or is not ready within the readiness deadline
  (the longest of ``monitor`` and `READY_FLOOR`) has *failed*; once failures are more than
  ``max_failure_ratio`` of the replicas the rollout is ``failed`` and replaces no more
  (``failure_action: continue`` never fails); the stacks handler then rolls back or pauses;
* a paused service replaces nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from carte.api.cluster import Assignment, ClusterRollout, ReplicaStatus, ServicePlacement

RolloutState = Literal["progressing", "completed", "failed"]

ROLLOUTS = "cluster/rollouts/"
READY_FLOOR = 60.0
"""Seconds a new replica has at least to become ready (a loaded 2-core node is slow)."""


@dataclass
class Progress:
    """A service's replicas of its current revision, as a rollout counts them."""

    updated: int = 0
    in_flight: int = 0
    failures: list[str] = field(default_factory=list)
    """One line per failed new replica."""
    last_updated: float = 0.0
    """Unix time the latest replica counted as updated."""
    old: int = 0
    """Assignments of another revision still there."""


def progress(
    service: ServicePlacement,
    assigned: Iterable[Assignment],
    statuses: dict[tuple[str, str], ReplicaStatus],
    now: float,
) -> Progress:
    """Count ``service``'s assignments (its own only) against the agents' reports."""
    revision = str(service.revision)
    deadline = max(service.monitor, READY_FLOOR)
    found = Progress()
    for assignment in assigned:
        if assignment.revision != revision:
            found.old += 1
            continue
        status = statuses.get((assignment.node, assignment.name))
        current = status is not None and status.revision == revision
        if current and status is not None and status.ready:
            ready_at = _unix(status.updated) or now
            if now - ready_at >= service.monitor:
                found.updated += 1
                found.last_updated = max(found.last_updated, ready_at + service.monitor)
                continue
        elif current and status is not None and status.state in ("exited", "failed"):
            why = status.reason or f"it {status.state}"
            found.failures.append(f"{assignment.name} on {assignment.node}: {why}")
            continue
        elif assignment.since and now - assignment.since > deadline:
            found.failures.append(
                f"{assignment.name} on {assignment.node}: not ready within {deadline:g} s "
                "(give it longer with deploy.update_config.monitor)"
            )
            continue
        found.in_flight += 1
    return found


def halted(service: ServicePlacement, found: Progress) -> bool:
    """Whether the failures stop the rollout (failure_action continue never does)."""
    if service.failure_action == "continue" or not found.failures:
        return False
    return len(found.failures) / max(service.replicas, 1) > service.max_failure_ratio


def room(service: ServicePlacement, found: Progress, now: float) -> int:
    """How many more replicas of another revision may be replaced now."""
    if service.paused or halted(service, found):
        return 0
    if service.delay and found.last_updated and now < found.last_updated + service.delay:
        return 0
    limit = service.parallelism or max(service.replicas, 1)
    return max(limit - found.in_flight - len(found.failures), 0)


def next_rollout(
    service: ServicePlacement, stored: ClusterRollout | None, found: Progress
) -> ClusterRollout | None:
    """The rollout record after this pass (None: no rollout to record). A rollout starts
    when the service's revision changes while replicas of another one run."""
    if stored is None or stored.revision != service.revision:
        if not found.old:
            return stored
        stored = ClusterRollout(
            stack=service.stack,
            service=service.service,
            revision=service.revision,
            total=service.replicas,
        )
    if stored.state != "progressing":
        return stored
    state: RolloutState = "progressing"
    message = ""
    if halted(service, found):
        state, message = "failed", "; ".join(found.failures[:3])
    elif not found.old and found.updated >= service.replicas:
        state = "completed"
    return msgspec.structs.replace(
        stored, state=state, updated=found.updated, total=service.replicas, message=message
    )


def _unix(stamp: str) -> float:
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
