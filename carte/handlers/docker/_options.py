"""The docker handler's options: ``handlers.options.docker`` in carte.yaml, e.g.
``handlers: {options: {docker: {socket: /run/carte/docker.sock}}}``."""

from __future__ import annotations

from carte.engine.config import HandlerOptions


class DockerOptions(HandlerOptions, frozen=True, kw_only=True):
    socket: str | None = None
    """Where to serve Docker's Engine API; None (the default) leaves the endpoint off."""
