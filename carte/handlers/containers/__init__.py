"""Containers: records, lifecycle, the shims, exec and attach, archives (cp, export), top.

The `containers` handler owns every container record and the shims; `container_tools` answers
top and stats. `_routes`, `_interactive_routes` and `_archive_routes` are this domain's HTTP
routes, declared as `ContainersHandler.routes` (JSON commands are served generically by the
http handler).
"""

from carte.handlers.containers._handler import ContainersHandler
from carte.handlers.containers._log_watch import (
    LogSelection,
    LogWatch,
    log_entries,
    watch_log,
)
from carte.handlers.containers._options import ContainersOptions, RestartBackoffOptions
from carte.handlers.containers._spec import resolve_user
from carte.handlers.containers._tools import ContainerToolsHandler

__all__ = [
    "ContainerToolsHandler",
    "ContainersHandler",
    "ContainersOptions",
    "LogSelection",
    "LogWatch",
    "RestartBackoffOptions",
    "log_entries",
    "resolve_user",
    "watch_log",
]
