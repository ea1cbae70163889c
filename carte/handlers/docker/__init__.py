"""Docker's Engine API on its own unix socket, translated onto Carte's own commands.

Off by default: ``carte daemon --docker-socket PATH`` or ``handlers.options.docker.socket``
in carte.yaml turns it on. See `_handler` for the socket and `_app` for what is served.
"""

from carte.handlers.docker._handler import DockerHandler

__all__ = ["DockerHandler"]
