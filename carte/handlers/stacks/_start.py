"""How a replica's container is started and removed on the bus: by the stacks reconciler on
this node, and by the cluster agent for the replicas a control plane assigns it."""

from __future__ import annotations

from carte.api.containers import ContainerConfig, CreateResult
from carte.api.errors import CarteError, NotFound
from carte.api.events import CreateContainer, RemoveContainer, StartContainer
from carte.engine import Bus


async def create_and_start(bus: Bus, config: ContainerConfig) -> CreateResult:
    """Create a container and start it; one that was created but does not start is removed
    again and the start's `CarteError` raised, so a failure leaves nothing behind."""
    created = await bus.request(CreateContainer(config=config))
    try:
        await bus.request(StartContainer(ref=created.id))
    except CarteError:
        await remove_if_present(bus, created.id)
        raise
    return created


async def remove_if_present(bus: Bus, container_id: str) -> None:
    """Remove the container, running or not; one already gone is not an error."""
    try:
        await bus.request(RemoveContainer(ref=container_id, force=True))
    except NotFound:
        pass
