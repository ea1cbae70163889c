"""Services: virtual IPs balanced over ready replicas (`services`) and the autoscaler."""

from carte.handlers.services._autoscaler import AutoscalerHandler
from carte.handlers.services._handler import ServicesHandler

__all__ = ["AutoscalerHandler", "ServicesHandler"]
