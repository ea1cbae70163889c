"""The public plugin API: everything a plugin author needs, from one module.

A plugin is a `Handler` subclass exposed through the ``carte.plugins`` entry-point group::

    # pyproject.toml of the plugin package
    [project.entry-points."carte.plugins"]
    hello = "carte_hello:HelloHandler"

    # carte_hello.py
    from carte.plugins.api import Fact, Handler, on, DaemonStarted

    class HelloHandler(Handler):
        name = "hello"

        @on(DaemonStarted)
        async def greet(self, fact: DaemonStarted) -> None:
            self.ctx.log.info("hello", extra={"daemon_pid": fact.pid})

Options come from carte.yaml (``handlers.options.<name>``) as ``self.ctx.options``; a
`check()` that returns a reason skips the plugin without failing the daemon. Commands a plugin
declares (subclasses of `Command`) are served at ``POST /v1/commands/<Name>``.

Only names exported here are stable for plugins; anything else in carte may change.
"""

from carte import API_VERSION, __version__
from carte.api.errors import (
    CarteError,
    Conflict,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from carte.api.events import (
    Command,
    ConfigReloaded,
    DaemonStarted,
    DaemonStopping,
    Event,
    Fact,
    HandlerCrashed,
    HandlerDisabled,
    HandlerSkipped,
    HandlerStarted,
    Ping,
    event_name,
)
from carte.engine import Bus, Handler, HandlerContext, Store, on

__all__ = [
    "API_VERSION",
    "Bus",
    "CarteError",
    "Command",
    "ConfigReloaded",
    "Conflict",
    "DaemonStarted",
    "DaemonStopping",
    "Event",
    "Fact",
    "Handler",
    "HandlerContext",
    "HandlerCrashed",
    "HandlerDisabled",
    "HandlerSkipped",
    "HandlerStarted",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "Ping",
    "Store",
    "Unavailable",
    "__version__",
    "event_name",
    "on",
]
