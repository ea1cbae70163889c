"""Wire schema for images: what `carte images` and `carte image inspect` show.

Shared by the images handlers (import/list/tag/rmi here, pull/push/save/load elsewhere).
Sizes are bytes; times are RFC 3339 strings in UTC.
"""

import msgspec


class _Wire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request/response bodies: unknown fields are a 400 naming the field."""


class ImageSummary(_Wire, kw_only=True):
    """One row of `carte images`: one per tag, or one `<none>` row for an untagged image."""

    id: str
    repository: str
    tag: str
    digest: str = ""
    created: str = ""
    size: int = 0


class ImageDetails(_Wire, kw_only=True):
    """`carte image inspect`: the stored image and its container defaults."""

    id: str
    repo_tags: list[str] = []
    manifest_digest: str = ""
    created: str = ""
    architecture: str = ""
    os: str = ""
    size: int = 0
    """The layers unpacked (their tars' sizes added up), as Docker's Size."""
    compressed_size: int = 0
    """The layer blobs as stored and as a registry transfers them."""
    layers: list[str] = []
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = []
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = {}
    stop_signal: str = ""
    exposed_ports: list[str] = []
    volumes: list[str] = []


class RemovedImage(_Wire, kw_only=True):
    """One line of `carte rmi`: a tag removed, or an image deleted."""

    untagged: str = ""
    deleted: str = ""


class BuildRequest(_Wire, kw_only=True):
    """`carte build` options (sent as the `options` query value; the body is the context tar)."""

    tags: list[str] = []
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = {}
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    labels: dict[str, str] = {}
    network: str = "default"
    source_date_epoch: int | None = None
    context_key: str = ""  # the client's context directory: its uploads sync into one copy


class BuildResult(_Wire, kw_only=True):
    """The built image: its id (config digest), manifest digest and tags."""

    id: str
    manifest_digest: str = ""
    names: list[str] = []


class BuildCachePruned(_Wire, kw_only=True):
    """`carte builder prune`: cache records dropped and the space the collection freed."""

    records: int = 0
    blobs: int = 0
    bytes_freed: int = 0


# -- registry, archives and maintenance (handlers "registry" and "archives") -------------------


class RegistryLogin(_Wire, kw_only=True):
    """Credentials for one registry, sent by the client with each request that needs them.

    The daemon never stores them: the client keeps logins in ~/.config/carte/auth.json (0600),
    as Docker's client does, so each user's logins stay their own."""

    username: str
    password: str


class PullResult(_Wire, kw_only=True):
    """The pulled image: id (config digest), manifest digest and the name it was tagged."""

    id: str
    manifest_digest: str
    name: str = ""


class PushResult(_Wire, kw_only=True):
    """The pushed reference and the digest of the manifest the registry now holds."""

    reference: str
    manifest_digest: str


class LoadedImage(_Wire, kw_only=True):
    """One image `carte load` stored: its id and its tags (none for an untagged image)."""

    id: str
    names: list[str] = []


class HistoryEntry(_Wire, kw_only=True):
    """One line of `carte history`, newest first; `id` is set on the top entry only."""

    id: str = ""
    created: str = ""
    created_by: str = ""
    comment: str = ""
    size: int = 0
    empty_layer: bool = False


class ImagePruneResult(_Wire, kw_only=True):
    """`carte image prune`: what was untagged and deleted, and the space freed."""

    deleted: list[RemovedImage] = []
    bytes_freed: int = 0


class CommitResult(_Wire, kw_only=True):
    """The image `carte commit` made."""

    id: str
    name: str = ""


class DiskUsageRow(_Wire, kw_only=True):
    """One line of `carte system df`."""

    type: str
    total: int = 0
    active: int = 0
    size: int = 0
    reclaimable: int = 0
