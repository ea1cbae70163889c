"""Restart policies as Docker applies them, and the backoff between restarts.

Pure rules, no bus: `restart_wanted` says whether a container that stopped is started again;
`RestartBackoff` gives the wait before each restart (base, doubling up to cap, back to base
once a run lasted `reset` seconds). Values come from carte.yaml `containers.restart`.
"""

from __future__ import annotations

from carte.api.containers import RestartPolicy
from carte.handlers.containers import RestartBackoffOptions


def restart_wanted(
    policy: RestartPolicy,
    *,
    exit_code: int,
    stopped_by_user: bool,
    restart_count: int,
    daemon_start: bool = False,
) -> bool:
    """Whether the policy starts the container again.

    A container a user stopped is not restarted when it exits. When the daemon starts,
    "always" containers come back even if a user had stopped them (Docker's rule);
    "unless-stopped" ones only if not; "on-failure" ones if their last exit was a failure that
    the user did not cause and the retry count allows one more.
    """
    name = policy.name
    if name == "always":
        return daemon_start or not stopped_by_user
    if name == "unless-stopped":
        return not stopped_by_user
    if name == "on-failure":
        limit = policy.maximum_retry_count
        return not stopped_by_user and exit_code != 0 and (limit <= 0 or restart_count < limit)
    return False


class RestartBackoff:
    """The delays between automatic restarts of one container."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next_delay(self, config: RestartBackoffOptions, ran_for: float) -> float:
        """The wait before the next restart of a run that lasted `ran_for` seconds."""
        if ran_for >= config.reset or self.delay <= 0:
            self.delay = config.base
        else:
            self.delay = min(self.delay * 2, config.cap)
        return min(self.delay, config.cap)
