"""Garbage collection: remove blobs and unpacked layers that no image in the index refers to,
and what an interrupted writer left."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import msgspec

from carte.image import oci
from carte.image.digest import chain_ids, digest_hex
from carte.image.errors import InvalidImage
from carte.image.layers import DONE_MARKER, UNPACK_PREFIX
from carte.image.store import ImageStore, StoredImage

BUILD_CACHE_DIR = "build-cache"
"""Where carte.build keeps its step records (carte.build._cache)."""


class CollectedGarbage(msgspec.Struct, frozen=True, kw_only=True):
    blobs: tuple[str, ...]
    layers: tuple[str, ...]
    bytes_freed: int


def collect_garbage(
    store: ImageStore, keep_chain_ids: Iterable[str] = (), *, wait: bool = True
) -> CollectedGarbage:
    """Delete unreferenced blobs, unpacked layers and stale ingest files; return what went.

    `keep_chain_ids` protects layers still mounted by containers whose image was removed; the
    layer blobs the build cache's step records name are kept too (`builder prune` removes
    records first, `image rm` the records of its image's layers: see `forget_records_of`).
    Waits for every import, load, pull or build in progress (any process) to finish first, and
    blocks new ones while it runs; with `wait=False` it collects nothing instead of waiting
    (the next collection frees it). A blob that cannot be parsed is kept, never guessed about.
    """
    with store.collecting(wait=wait) as held:
        if not held:
            return CollectedGarbage(blobs=(), layers=(), bytes_freed=0)
        blobs, chains = _referenced(store)
        blobs.update(digest_hex(d) for _, d in build_records(store) if d and _is_digest(d))
        cached_diff_ids = _cached_diff_ids(store)
        chains.update(digest_hex(c) for c in keep_chain_ids)
        removed_blobs: list[str] = []
        freed = 0
        for path in sorted(store.blobs.iterdir()):
            if path.name not in blobs:
                freed += path.stat().st_size
                path.unlink()
                removed_blobs.append("sha256:" + path.name)
        removed_layers: list[str] = []
        for path in sorted(store.layers_dir.iterdir()):
            if path.name not in chains and not _holds(path, cached_diff_ids):
                shutil.rmtree(path)
                if not path.name.startswith("."):
                    removed_layers.append("sha256:" + path.name)
        for path in store.ingest_dir.iterdir():
            if path.name.startswith("blob-"):
                path.unlink(missing_ok=True)
        forget_stale_build_records(store)
    return CollectedGarbage(
        blobs=tuple(removed_blobs), layers=tuple(removed_layers), bytes_freed=freed
    )


def remove_interrupted_unpacks(store: ImageStore) -> list[str]:
    """Remove what a process killed while writing to the store left: half-unpacked layers
    (`layers/.unpack-*`) and temp blobs (`ingest/blob-*`); return the layer dirs' names.

    For start-up: never waits. When any process is writing to the store right now (an
    import, pull or unpack holds `store.writing()`), nothing is removed and [] is returned;
    the next garbage collection removes them then.
    """
    removed: list[str] = []
    with store.collecting(wait=False) as held:
        if not held:
            return removed
        for path in sorted(store.layers_dir.iterdir()):
            if path.name.startswith(UNPACK_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        for path in store.ingest_dir.iterdir():
            if path.name.startswith("blob-"):
                path.unlink(missing_ok=True)
    return removed


def build_records(store: ImageStore) -> list[tuple[Path, str | None]]:
    """The build cache's step records (`ROOT/build-cache/*.json`) with the layer blob each
    names (None for a step without a layer, or an unreadable record)."""
    found: list[tuple[Path, str | None]] = []
    directory = store.root / BUILD_CACHE_DIR
    if not directory.is_dir():
        return found
    for path in directory.glob("*.json"):
        try:
            record = _record_decoder.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            found.append((path, None))
            continue
        found.append((path, record.layer.descriptor.digest if record.layer else None))
    return found


def forget_stale_build_records(store: ImageStore) -> int:
    """Remove build cache records whose layer blob was collected (each is a miss anyway)."""
    removed = 0
    for path, digest in build_records(store):
        if digest is not None and not store.has_blob(digest):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def forget_records_of(store: ImageStore, image: StoredImage) -> int:
    """Remove the step records naming `image`'s layers that no other image in the index uses
    (the cache a build of this image left: `image rm` frees it with the image)."""
    others = {d.digest for i in store.images() if i.id != image.id for d in i.manifest.layers}
    mine = {d.digest for d in image.manifest.layers} - others
    removed = 0
    for path, digest in build_records(store):
        if digest in mine:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _cached_diff_ids(store: ImageStore) -> set[str]:
    found: set[str] = set()
    directory = store.root / BUILD_CACHE_DIR
    for path in directory.glob("*.json") if directory.is_dir() else ():
        try:
            record = _record_decoder.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        if record.layer is not None:
            found.add(record.layer.diff_id)
    return found


def _holds(layer: Path, diff_ids: set[str]) -> bool:
    """Whether an unpacked layer (its `done` marker names its diffID) is one the build cache
    names; a cached step's layer is kept unpacked for the next build on it."""
    if not diff_ids or layer.name.startswith("."):
        return False
    try:
        return (layer / DONE_MARKER).read_text().strip() in diff_ids
    except OSError:
        return False


def _is_digest(text: str) -> bool:
    return text.startswith("sha256:") and len(text) == 71


def forget_build_records(store: ImageStore, *, written_before: float) -> int:
    """Remove the build cache's step records written before `written_before` (Unix seconds);
    how many went. The layers only they kept are garbage for the next collection."""
    removed = 0
    for path, _ in build_records(store):
        try:
            if path.stat().st_mtime < written_before:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class _Descriptor(msgspec.Struct):
    digest: str


class _Layer(msgspec.Struct):
    descriptor: _Descriptor
    diff_id: str = ""


class _Record(msgspec.Struct):
    layer: _Layer | None = None


_record_decoder = msgspec.json.Decoder(_Record)


def _referenced(store: ImageStore) -> tuple[set[str], set[str]]:
    blobs: set[str] = set()
    chains: set[str] = set()
    pending = list(store.read_index().manifests)
    while pending:
        descriptor = pending.pop()
        if not store.has_blob(descriptor.digest):
            continue
        blobs.add(digest_hex(descriptor.digest))
        data = store.read_blob(descriptor.digest)
        try:
            if descriptor.media_type in oci.INDEX_TYPES:
                pending.extend(oci.decode_index(data).manifests)
            elif descriptor.media_type in oci.MANIFEST_TYPES:
                manifest = oci.decode_manifest(data)
                blobs.add(digest_hex(manifest.config.digest))
                blobs.update(digest_hex(layer.digest) for layer in manifest.layers)
                if store.has_blob(manifest.config.digest):
                    config = oci.decode_config(store.read_blob(manifest.config.digest))
                    chains.update(digest_hex(c) for c in chain_ids(config.rootfs.diff_ids))
        except InvalidImage:
            continue
    return blobs, chains
