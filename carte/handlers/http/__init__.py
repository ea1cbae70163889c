"""The HTTP API on the daemon's unix socket: the quart-trio app, generic command routes,
the event stream and the OpenAPI document.
"""

from carte.handlers.http._handler import ApiHandler, hypercorn_config

__all__ = ["ApiHandler", "hypercorn_config"]
