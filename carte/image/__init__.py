"""carte.image: the OCI content store, layers, archives and the registry client.

A synchronous library (no trio, no bus): the image handlers call it from worker threads.
"""

from carte.image.archive import load, save
from carte.image.auth import Credentials, CredentialStore
from carte.image.errors import (
    AmbiguousImage,
    DigestMismatch,
    ImageNotFound,
    InvalidImage,
    InvalidReference,
    UnsafeLayer,
)
from carte.image.gc import CollectedGarbage, collect_garbage
from carte.image.importer import import_rootfs
from carte.image.layers import LayerBlob, layer_dir, lowerdirs, store_layer
from carte.image.reference import Reference, parse_reference
from carte.image.registry import Progress, Registry, RegistryError, RegistryUnauthorized
from carte.image.store import ImageStore, StoredImage
from carte.image.upperdiff import diff_from_upper

__all__ = [
    "AmbiguousImage",
    "CollectedGarbage",
    "CredentialStore",
    "Credentials",
    "DigestMismatch",
    "ImageNotFound",
    "ImageStore",
    "InvalidImage",
    "InvalidReference",
    "LayerBlob",
    "Progress",
    "Reference",
    "Registry",
    "RegistryError",
    "RegistryUnauthorized",
    "StoredImage",
    "UnsafeLayer",
    "collect_garbage",
    "diff_from_upper",
    "import_rootfs",
    "layer_dir",
    "load",
    "lowerdirs",
    "parse_reference",
    "save",
    "store_layer",
]
