"""Built-in handlers. Reading `BUILTIN` tells what the daemon contains.

Plugins register the same way through the `carte.plugins` entry-point group; both go through
one `carte.engine.Roster`. Add a built-in by importing its class here and listing it.
"""

from carte.engine import Handler
from carte.handlers.cluster import (
    AgentHandler,
    MembershipHandler,
    OverlayHandler,
    SchedulerHandler,
)
from carte.handlers.containers import ContainersHandler, ContainerToolsHandler
from carte.handlers.docker import DockerHandler
from carte.handlers.http import ApiHandler
from carte.handlers.images import ArchivesHandler, BuildHandler, ImagesHandler, RegistryHandler
from carte.handlers.lifecycle import HealthHandler, RestartHandler
from carte.handlers.metrics import MetricsHandler
from carte.handlers.network import NetworkHandler
from carte.handlers.services import AutoscalerHandler, ServicesHandler
from carte.handlers.stacks import StacksHandler
from carte.handlers.ui import UiHandler
from carte.handlers.volumes import VolumesHandler

BUILTIN: tuple[type[Handler], ...] = (
    AgentHandler,
    ApiHandler,
    ArchivesHandler,
    AutoscalerHandler,
    BuildHandler,
    ContainersHandler,
    ContainerToolsHandler,
    DockerHandler,
    HealthHandler,
    ImagesHandler,
    MembershipHandler,
    MetricsHandler,
    NetworkHandler,
    OverlayHandler,
    RegistryHandler,
    RestartHandler,
    SchedulerHandler,
    ServicesHandler,
    StacksHandler,
    UiHandler,
    VolumesHandler,
)

__all__ = ["BUILTIN"]
