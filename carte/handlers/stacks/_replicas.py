"""What the stacks handler knows about each running replica: its address, whether it is
ready, and events a rollout waits on. Readiness comes from the service's `x-carte.readiness`
probe, else its healthcheck (`HealthChanged`), else from having started."""

from __future__ import annotations

import trio

from carte.api.containers import ContainerSummary
from carte.api.stacks import REPLICA_LABEL, REVISION_LABEL


class Replica:
    """One tracked replica container. `ready_once` is set the first time it becomes ready;
    `lost` when, after that, it stops being ready or exits."""

    def __init__(self, container_id: str, stack: str, service: str, ip: str, ports: list[int]):
        self.container_id = container_id
        self.stack = stack
        self.service = service
        self.ip = ip
        self.ports = ports
        self.ready = False
        self.ready_once = trio.Event()
        self.lost = trio.Event()
        self.failed = trio.Event()
        self.reason = ""
        self.probe_scope = trio.CancelScope()


def replica_number(row: ContainerSummary) -> int:
    try:
        return int(row.labels.get(REPLICA_LABEL, "0"))
    except ValueError:
        return 0


def revision_of(row: ContainerSummary) -> int:
    try:
        return int(row.labels.get(REVISION_LABEL, "0"))
    except ValueError:
        return 0


def exit_code_of(row: ContainerSummary) -> int | None:
    """The exit code in ps's status ("Exited (3) 2 seconds ago"), None when not shown."""
    text = row.status
    if not text.startswith("Exited ("):
        return None
    try:
        return int(text[len("Exited (") : text.index(")")])
    except ValueError:
        return None
