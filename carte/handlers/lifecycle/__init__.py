"""What keeps containers alive: health checks (`health`) and restart policies (`restart`)."""

from carte.handlers.lifecycle._health import HealthHandler
from carte.handlers.lifecycle._restart import RestartHandler

__all__ = ["HealthHandler", "RestartHandler"]
