"""Built-in handlers. Reading `BUILTIN` tells what the daemon contains.

Plugins register the same way through the `carte.plugins` entry-point group; both go through
one `carte.engine.Registry`. Add a built-in by importing its class here and listing it.
"""

from carte.engine import Handler
from carte.handlers.api import ApiHandler
from carte.handlers.archives import ArchivesHandler
from carte.handlers.autoscaler import AutoscalerHandler
from carte.handlers.build import BuildHandler
from carte.handlers.container_tools import ContainerToolsHandler
from carte.handlers.containers import ContainersHandler
from carte.handlers.health import HealthHandler
from carte.handlers.images import ImagesHandler
from carte.handlers.network import NetworkHandler
from carte.handlers.registry import RegistryHandler
from carte.handlers.restart import RestartHandler
from carte.handlers.services import ServicesHandler
from carte.handlers.stacks import StacksHandler
from carte.handlers.volumes import VolumesHandler

BUILTIN: tuple[type[Handler], ...] = (
    ApiHandler,
    ArchivesHandler,
    AutoscalerHandler,
    BuildHandler,
    ContainersHandler,
    ContainerToolsHandler,
    HealthHandler,
    ImagesHandler,
    NetworkHandler,
    RegistryHandler,
    RestartHandler,
    ServicesHandler,
    StacksHandler,
    VolumesHandler,
)

__all__ = ["BUILTIN"]
