"""Containers: records, lifecycle, the shims, exec and attach, archives (cp, export), top.

The `containers` handler owns every container record and the shims; `container_tools` answers
top and stats. `_routes`, `_interactive_routes` and `_archive_routes` are this domain's HTTP
routes (JSON commands are served generically by the http handler).
"""

from carte.handlers.containers._archive_routes import register_archive_routes
from carte.handlers.containers._handler import ContainersHandler
from carte.handlers.containers._interactive_routes import register_interactive_routes
from carte.handlers.containers._options import ContainersOptions, RestartBackoffOptions
from carte.handlers.containers._routes import register_container_routes
from carte.handlers.containers._spec import resolve_user
from carte.handlers.containers._tools import ContainerToolsHandler

__all__ = [
    "ContainerToolsHandler",
    "ContainersHandler",
    "ContainersOptions",
    "RestartBackoffOptions",
    "register_archive_routes",
    "register_container_routes",
    "register_interactive_routes",
    "resolve_user",
]
