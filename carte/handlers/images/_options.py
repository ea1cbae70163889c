"""The registry handler's options: the ``images:`` section of carte.yaml."""

from carte.engine.config import HandlerOptions


class RegistryOptions(HandlerOptions, frozen=True, kw_only=True):
    insecure_registries: list[str] = []
    """Registry hosts (HOST or HOST:PORT) reached over plain HTTP; loopback always is."""
