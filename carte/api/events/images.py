"""Images, builds, registries and archives (handlers "images", "build", "registry", "archives")."""

from typing import ClassVar

import msgspec

from carte.api.events.base import Command, Fact
from carte.api.images import (
    BuildCachePruned,
    BuildRequest,
    BuildResult,
    CommitResult,
    DiskUsageRow,
    HistoryEntry,
    ImageDetails,
    ImagePruneResult,
    ImageSummary,
    PullResult,
    PushResult,
    RegistryLogin,
    RemovedImage,
)

# --- images (handler "images") -------------------------------------------------------------


class ImportImage(Command[ImageSummary], frozen=True, kw_only=True):
    """Store a root filesystem tarball (at `source` on the daemon's host) as a one-layer image."""

    topic: ClassVar[str] = "image.import"
    source: str
    name: str = ""


class ListImages(Command[list[ImageSummary]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.list"
    all: bool = False
    filters: dict[str, list[str]] = {}


class InspectImage(Command[ImageDetails], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.inspect"
    ref: str


class TagImage(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.tag"
    source: str
    target: str


class RemoveImage(Command[list[RemovedImage]], frozen=True, kw_only=True):
    """Remove a tag (or, given an id, the image); refused while a container uses the image
    unless `force`."""

    topic: ClassVar[str] = "image.remove"
    ref: str
    force: bool = False


class ImageImported(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.imported"
    name: str


class ImageTagged(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.tagged"
    name: str


class ImageUntagged(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.untagged"
    name: str


class ImageRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.removed"


# --- builds (handler "build") ---------------------------------------------------------------


class BuildImage(Command[BuildResult], frozen=True, kw_only=True):
    """Build from a context directory on the daemon's host (the streaming route POST /v1/build
    takes an uploaded context tar instead and streams progress)."""

    topic: ClassVar[str] = "image.build"
    context: str
    options: BuildRequest = msgspec.field(default_factory=BuildRequest)
    secrets: dict[str, bytes] = {}
    """`RUN --mount=type=secret,id=ID` contents by id (Compose's build.secrets)."""


class PruneBuildCache(Command[BuildCachePruned], frozen=True, kw_only=True):
    """`until` (Unix seconds, 0 for none): only the step records written before it go (and
    the layers no image keeps); without it the whole cache, mounts and kept contexts go."""

    topic: ClassVar[str] = "image.build_cache_prune"
    until: float = 0.0


class ImageBuilt(Fact, frozen=True, kw_only=True):
    """`id` is the image id; `names` its tags."""

    topic: ClassVar[str] = "image.built"
    names: list[str] = []


# --- registries, archives, image maintenance (handlers "registry" and "archives") -----------


class PullImage(Command[PullResult], frozen=True, kw_only=True):
    """Pull `reference` (the streaming route POST /v1/images/pull reports progress too).
    `login` comes from the client's auth.json; `insecure` allows plain HTTP to this host."""

    topic: ClassVar[str] = "image.pull"
    reference: str
    login: RegistryLogin | None = None
    insecure: bool = False


class PushImage(Command[PushResult], frozen=True, kw_only=True):
    """Push the local image `image` to the registry its name (or `target`) points at."""

    topic: ClassVar[str] = "image.push"
    image: str
    target: str = ""
    login: RegistryLogin | None = None
    insecure: bool = False


class CheckRegistryLogin(Command[None], frozen=True, kw_only=True):
    """`carte login`: check that `host` accepts `login` (the client then keeps it)."""

    topic: ClassVar[str] = "image.login"
    host: str
    login: RegistryLogin
    insecure: bool = False


class CommitContainer(Command[CommitResult], frozen=True, kw_only=True):
    """A container's changes (its overlay upper dir) as a new layer on its image."""

    topic: ClassVar[str] = "image.commit"
    container: str
    reference: str = ""
    author: str = ""
    message: str = ""
    changes: list[str] = []
    pause: bool = True


class ShowImageHistory(Command[list[HistoryEntry]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.history"
    ref: str


class PruneImages(Command[ImagePruneResult], frozen=True, kw_only=True):
    """Remove untagged images no container uses; with `all`, every image no container uses."""

    topic: ClassVar[str] = "image.prune"
    all: bool = False


class GetDiskUsage(Command[list[DiskUsageRow]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "system.df"


class ImagePulled(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.pulled"
    name: str


class ImagePushed(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.pushed"
    name: str
    manifest_digest: str


class ImageLoaded(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.loaded"
    names: list[str] = []


class ImageCommitted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "image.committed"
    name: str
    container: str
