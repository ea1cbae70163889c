"""Image archives: `save` writes an OCI archive or a docker-archive (as `docker save` does);
`load` reads either (plain or gzip-compressed) and stores what it holds.

`load` treats the archive as hostile: nothing is ever extracted by member name. Members are
looked up by name inside the archive only (symlinks resolved inside it, never outside), every
blob is verified against its digest on the way into the store, and every layer is unpacked
through the safe extractor before any image is recorded, so a bad archive leaves no image.
"""

from __future__ import annotations

import io
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import msgspec

from carte.image import oci
from carte.image.compression import decompressed
from carte.image.digest import chain_ids, digest_hex, parse_digest
from carte.image.errors import InvalidImage, InvalidReference
from carte.image.layers import is_unpacked, unpack_layer
from carte.image.reference import parse_reference
from carte.image.store import ImageStore, StoredImage

ArchiveFormat = Literal["oci", "docker"]
CONTAINERD_NAME = "io.containerd.image.name"
_MAX_LINK_HOPS = 8
_CHUNK = 1 << 20


class DockerManifestEntry(msgspec.Struct, frozen=True, rename="pascal"):
    """One image in a docker-archive's manifest.json."""

    config: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...] | None = None


_docker_manifest_decoder = msgspec.json.Decoder(list[DockerManifestEntry])
_encoder = msgspec.json.Encoder()


# -- save ------------------------------------------------------------------------------------


def save(
    store: ImageStore, queries: Sequence[str], out: BinaryIO, fmt: ArchiveFormat = "oci"
) -> None:
    """Write the images named by `queries` (names, ids) to `out` as one archive.

    Raises `ImageNotFound` for an unknown image before anything is written.
    """
    chosen = [(query, store.get(query)) for query in queries]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        if fmt == "oci":
            _save_oci(store, chosen, archive)
        else:
            _save_docker(store, chosen, archive)


def _names_for(query: str, image: StoredImage) -> tuple[str, ...]:
    """The tags to record: the one asked for if it was a name, else all the image's tags."""
    try:
        reference = parse_reference(query)
    except InvalidReference:
        return image.names
    if reference.familiar in image.names:
        return (reference.familiar,)
    return image.names


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    archive.addfile(info, io.BytesIO(data))


def _add_blob(store: ImageStore, archive: tarfile.TarFile, digest: str, added: set[str]) -> None:
    if digest in added:
        return
    added.add(digest)
    path = store.blob_path(digest)
    info = tarfile.TarInfo(f"blobs/sha256/{digest_hex(digest)}")
    info.size, info.mode = path.stat().st_size, 0o644
    with open(path, "rb") as blob:
        archive.addfile(info, blob)


def _save_oci(
    store: ImageStore, chosen: list[tuple[str, StoredImage]], archive: tarfile.TarFile
) -> None:
    _add_bytes(archive, "oci-layout", oci.encode(oci.ImageLayout()))
    added: set[str] = set()
    entries: list[oci.Descriptor] = []
    for query, image in chosen:
        for digest in (
            image.manifest_digest,
            image.id,
            *(layer.digest for layer in image.manifest.layers),
        ):
            _add_blob(store, archive, digest, added)
        names = _names_for(query, image) or (None,)
        for name in names:
            annotations = None
            if name is not None:
                full = parse_reference(name).full
                annotations = {oci.REF_NAME: full, CONTAINERD_NAME: full}
            entries.append(
                msgspec.structs.replace(image.manifest_descriptor, annotations=annotations)
            )
    index = oci.Index(schema_version=2, media_type=oci.OCI_INDEX, manifests=tuple(entries))
    _add_bytes(archive, "index.json", oci.encode(index))


def _save_docker(
    store: ImageStore, chosen: list[tuple[str, StoredImage]], archive: tarfile.TarFile
) -> None:
    manifest: list[dict[str, object]] = []
    repositories: dict[str, dict[str, str]] = {}
    added: set[str] = set()
    for query, image in chosen:
        config_name = f"{digest_hex(image.id)}.json"
        if config_name not in added:
            added.add(config_name)
            _add_bytes(archive, config_name, store.read_blob(image.id))
        layer_names = []
        for descriptor, diff_id in zip(image.manifest.layers, image.diff_ids, strict=True):
            layer_name = f"{digest_hex(diff_id)}/layer.tar"
            layer_names.append(layer_name)
            if layer_name not in added:
                added.add(layer_name)
                _add_bytes(archive, f"{digest_hex(diff_id)}/VERSION", b"1.0")
                _add_uncompressed_layer(store, archive, descriptor.digest, layer_name)
        tags = _names_for(query, image)
        manifest.append({"Config": config_name, "RepoTags": list(tags), "Layers": layer_names})
        for tag in tags:
            reference = parse_reference(tag)
            repository = repositories.setdefault(reference.familiar_repository, {})
            repository[reference.tag or "latest"] = digest_hex(image.diff_ids[-1])
    _add_bytes(archive, "manifest.json", _encoder.encode(manifest))
    _add_bytes(archive, "repositories", _encoder.encode(repositories))


def _add_uncompressed_layer(
    store: ImageStore, archive: tarfile.TarFile, digest: str, name: str
) -> None:
    # A tar member needs its size first, so the uncompressed layer is spooled to a temp file.
    with tempfile.TemporaryFile(dir=store.ingest_dir) as spool:
        with store.open_blob(digest) as blob, decompressed(blob) as stream:
            shutil.copyfileobj(stream, spool, _CHUNK)
        info = tarfile.TarInfo(name)
        info.size, info.mode = spool.tell(), 0o644
        spool.seek(0)
        archive.addfile(info, spool)


# -- load ------------------------------------------------------------------------------------


class _ArchiveReader:
    """Regular-file members of an archive by normalised name; symlinks resolved inside it."""

    def __init__(self, archive: tarfile.TarFile, what: str) -> None:
        self._archive = archive
        self._what = what
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in archive.getmembers():
            name = posixpath.normpath(member.name.lstrip("/"))
            self._members.setdefault(name, member)

    def has(self, name: str) -> bool:
        return name in self._members

    def open(self, name: str) -> BinaryIO:
        """Open a member by name; raises `InvalidImage` if it is missing or leaves the archive."""
        for _ in range(_MAX_LINK_HOPS):
            normal = posixpath.normpath(name)
            member = self._members.get(normal)
            if member is None or normal.startswith("../") or normal.startswith("/"):
                break
            if member.issym():
                name = posixpath.join(posixpath.dirname(normal), member.linkname)
                continue
            if member.islnk():
                name = member.linkname
                continue
            if member.isreg():
                source = self._archive.extractfile(member)
                assert source is not None
                return source  # type: ignore[return-value]
            break
        raise InvalidImage(
            f'{self._what} has no file "{name}" that its manifest refers to; the archive is '
            "incomplete or not an image archive"
        )

    def read(self, name: str) -> bytes:
        with self.open(name) as member:
            return member.read()


def load(store: ImageStore, path: Path) -> list[StoredImage]:
    """Store every image in the archive at `path` (OCI or docker-archive, plain or gzip).

    Raises `InvalidImage` for a malformed or incomplete archive, `DigestMismatch` when content
    does not match its digest and `UnsafeLayer` for a hostile layer; in each case no image is
    recorded (blobs already stored are left for garbage collection).
    """
    what = f"archive {path.name}"
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidImage(f"{what} cannot be read as a tar archive: {exc}") from None
    with archive, store.writing():
        reader = _ArchiveReader(archive, what)
        if reader.has("manifest.json"):
            pending = _load_docker(store, reader, what)
        elif reader.has("index.json"):
            pending = _load_oci(store, reader, what)
        else:
            raise InvalidImage(
                f"{what} has neither manifest.json nor index.json; it is not an image archive "
                "(use carte import for a root filesystem tarball)"
            )
        for descriptor, _names in pending:
            unpack_all(store, descriptor)
        return [store.add_image(descriptor, names) for descriptor, names in pending]


def _load_docker(
    store: ImageStore, reader: _ArchiveReader, what: str
) -> list[tuple[oci.Descriptor, tuple[str, ...]]]:
    try:
        entries = _docker_manifest_decoder.decode(reader.read("manifest.json"))
    except msgspec.DecodeError as exc:
        raise InvalidImage(f"{what} has an invalid manifest.json: {exc}") from None
    pending = []
    for entry in entries:
        config_bytes = reader.read(entry.config)
        config = oci.decode_config(config_bytes, f"{what}: {entry.config}")
        if len(config.rootfs.diff_ids) != len(entry.layers):
            raise InvalidImage(
                f"{what}: {entry.config} lists {len(config.rootfs.diff_ids)} diff_ids but the "
                f"manifest lists {len(entry.layers)} layers"
            )
        layers = []
        for layer_name, diff_id in zip(entry.layers, config.rootfs.diff_ids, strict=True):
            parse_digest(diff_id)
            if not store.has_blob(diff_id):
                with (
                    reader.open(layer_name) as member,
                    decompressed(member) as stream,
                    store.ingest(diff_id) as blob,
                ):
                    shutil.copyfileobj(stream, blob, _CHUNK)
            size = store.blob_path(diff_id).stat().st_size
            layers.append(oci.Descriptor(media_type=oci.OCI_LAYER, digest=diff_id, size=size))
        manifest = oci.Manifest(
            schema_version=2,
            media_type=oci.OCI_MANIFEST,
            config=store.put_blob(config_bytes, oci.OCI_CONFIG),
            layers=tuple(layers),
        )
        descriptor = store.put_blob(oci.encode(manifest), oci.OCI_MANIFEST)
        pending.append((descriptor, _familiar_names(entry.repo_tags or (), what)))
    return pending


def _load_oci(
    store: ImageStore, reader: _ArchiveReader, what: str
) -> list[tuple[oci.Descriptor, tuple[str, ...]]]:
    index = oci.decode_index(reader.read("index.json"), f"{what}: index.json")
    by_digest: dict[str, tuple[oci.Descriptor, list[str]]] = {}
    for entry in index.manifests:
        descriptor = _pick_manifest(store, reader, entry, what)
        annotations = entry.annotations or {}
        name = annotations.get(CONTAINERD_NAME) or annotations.get(oci.REF_NAME)
        names = by_digest.setdefault(descriptor.digest, (descriptor, []))[1]
        # A bare ref.name ("latest") is only a tag, as containerd writes it; it names nothing.
        if name and (":" in name or "/" in name):
            names.append(name)
    return [(d, _familiar_names(names, what)) for d, names in by_digest.values()]


def _pick_manifest(
    store: ImageStore, reader: _ArchiveReader, entry: oci.Descriptor, what: str
) -> oci.Descriptor:
    """Copy a manifest (choosing linux/amd64 from an index) and its blobs into the store."""
    data = _copy_blob(store, reader, entry, what)
    media_type = entry.media_type or oci.sniff_media_type(data, what)
    if media_type in oci.INDEX_TYPES:
        nested = oci.decode_index(data, f"{what}: {entry.digest}")
        for candidate in nested.manifests:
            platform = candidate.platform
            if platform is None or (platform.os, platform.architecture) == ("linux", "amd64"):
                return _pick_manifest(store, reader, candidate, what)
        raise InvalidImage(f"{what}: image index {entry.digest} has no linux/amd64 image")
    manifest = oci.decode_manifest(data, f"{what}: {entry.digest}")
    for blob in (manifest.config, *manifest.layers):
        if not store.has_blob(blob.digest):
            _copy_blob(store, reader, blob, what)
    return oci.Descriptor(media_type=media_type, digest=entry.digest, size=len(data))


def _copy_blob(
    store: ImageStore, reader: _ArchiveReader, descriptor: oci.Descriptor, what: str
) -> bytes:
    """Copy one blob into the store, verified; return its bytes if it is a small document."""
    digest = parse_digest(descriptor.digest)
    if not store.has_blob(digest):
        with (
            reader.open(f"blobs/sha256/{digest_hex(digest)}") as member,
            store.ingest(digest, descriptor.size) as blob,
        ):
            shutil.copyfileobj(member, blob, _CHUNK)
    if descriptor.media_type in oci.LAYER_TYPES:
        return b""
    return store.read_blob(digest)


def unpack_all(store: ImageStore, descriptor: oci.Descriptor) -> None:
    """Unpack every layer of a stored manifest into the cache (validating hostile input)."""
    manifest = oci.decode_manifest(store.read_blob(descriptor.digest))
    config = oci.decode_config(store.read_blob(manifest.config.digest))
    diff_ids = config.rootfs.diff_ids
    if len(diff_ids) != len(manifest.layers):
        raise InvalidImage(
            f"image {manifest.config.digest} lists {len(diff_ids)} diff_ids for "
            f"{len(manifest.layers)} layers; the archive is corrupt"
        )
    for layer, diff_id, chain_id in zip(
        manifest.layers, diff_ids, chain_ids(diff_ids), strict=True
    ):
        if not is_unpacked(store, chain_id):
            unpack_layer(store, layer, diff_id, chain_id, trusted=False)


def _familiar_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    familiar = []
    for name in names:
        try:
            familiar.append(parse_reference(name).familiar)
        except InvalidReference:
            raise InvalidImage(f'{what} tags an image with the invalid name "{name}"') from None
    return tuple(familiar)
