"""The OCI image spec (and Docker schema 2) as msgspec Structs, with their media types.

Decoders here tolerate unknown fields: manifests and configs come from other tools, and the
store always keeps the original bytes (re-encoding would change their digests).
"""

from __future__ import annotations

from typing import Any

import msgspec

from carte.image.errors import InvalidImage

OCI_LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
LAYER_TYPES = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NONDIST_GZIP,
        DOCKER_LAYER,
        DOCKER_FOREIGN_LAYER,
    }
)


# The image spec spells these two keys with a dot (platform and image config alike).
_OS_KEYS = {"os_version": "os.version", "os_features": "os.features"}


class Platform(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename=_OS_KEYS):
    architecture: str
    os: str
    os_version: str | None = None
    os_features: tuple[str, ...] | None = None
    variant: str | None = None


class Descriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = None


class Manifest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    schema_version: int
    media_type: str | None = None
    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    annotations: dict[str, str] | None = None


class Index(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    schema_version: int
    media_type: str | None = None
    manifests: tuple[Descriptor, ...] = ()
    annotations: dict[str, str] | None = None


class Healthcheck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="pascal"):
    """Docker's HEALTHCHECK extension; durations are nanoseconds, as Docker writes them."""

    test: tuple[str, ...] | None = None
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    retries: int | None = None


class ContainerConfig(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="pascal"
):
    """The `config` section of an image config: the defaults a container starts with."""

    user: str | None = None
    exposed_ports: dict[str, dict[str, Any]] | None = None
    env: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    args_escaped: bool | None = None
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] | None = None
    shell: tuple[str, ...] | None = None


class RootFS(msgspec.Struct, frozen=True, kw_only=True):
    type: str = "layers"
    diff_ids: tuple[str, ...] = ()


class History(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename=_OS_KEYS):
    created: str | None = None
    author: str | None = None
    architecture: str
    os: str
    os_version: str | None = None
    os_features: tuple[str, ...] | None = None
    variant: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS = msgspec.field(default_factory=RootFS)
    history: tuple[History, ...] | None = None


class ImageLayout(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    image_layout_version: str = OCI_LAYOUT_VERSION


class _MediaTypeProbe(msgspec.Struct, kw_only=True, rename="camel"):
    media_type: str | None = None
    manifests: Any = None
    config: Any = None


_encoder = msgspec.json.Encoder()
_manifest_decoder = msgspec.json.Decoder(Manifest)
_index_decoder = msgspec.json.Decoder(Index)
_config_decoder = msgspec.json.Decoder(ImageConfig)
_probe_decoder = msgspec.json.Decoder(_MediaTypeProbe)


def encode(value: msgspec.Struct) -> bytes:
    """Compact JSON for a spec object (what gets hashed and stored)."""
    return _encoder.encode(value)


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidImage(f"{what} is not valid JSON for its schema: {exc}") from None


def decode_manifest(data: bytes, what: str = "image manifest") -> Manifest:
    """Decode a manifest; raises `InvalidImage` naming `what` if it is malformed."""
    manifest: Manifest = _decode(_manifest_decoder, data, what)
    return manifest


def decode_index(data: bytes, what: str = "image index") -> Index:
    """Decode an index or Docker manifest list; raises `InvalidImage` if malformed."""
    index: Index = _decode(_index_decoder, data, what)
    return index


def decode_config(data: bytes, what: str = "image config") -> ImageConfig:
    """Decode an image config; raises `InvalidImage` naming `what` if it is malformed."""
    config: ImageConfig = _decode(_config_decoder, data, what)
    return config


def sniff_media_type(data: bytes, what: str = "manifest") -> str:
    """The media type of a manifest-or-index document, from its field or its shape."""
    probe: _MediaTypeProbe = _decode(_probe_decoder, data, what)
    if probe.media_type:
        return probe.media_type
    if probe.manifests is not None:
        return OCI_INDEX
    if probe.config is not None:
        return OCI_MANIFEST
    raise InvalidImage(f"{what} is neither an image manifest nor an index")
