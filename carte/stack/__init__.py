"""The Compose manifest of a stack: model, parsing with line numbers, interpolation, checks
and the container config of a replica. Synchronous; knows nothing of the bus."""

from carte.stack.compose_config import compose_config
from carte.stack.interpolate import InterpolationError, interpolate, parse_dotenv
from carte.stack.model import Manifest, Service
from carte.stack.parse import ManifestError, Source, load_manifest
from carte.stack.replica import image_name, network_name, replica_config, resources, template
from carte.stack.validate import start_order

__all__ = [
    "InterpolationError",
    "Manifest",
    "ManifestError",
    "Service",
    "Source",
    "compose_config",
    "image_name",
    "interpolate",
    "load_manifest",
    "network_name",
    "parse_dotenv",
    "replica_config",
    "resources",
    "start_order",
    "template",
]
