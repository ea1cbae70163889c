"""Layers: unpack blobs once per chainID as overlay lowerdirs, and make layer blobs from dirs.

`ROOT/layers/<chainID hex>/diff` holds one layer in overlay form (whiteouts as 0/0 devices,
opaque dirs as xattrs), with `done` written last; it is unpacked in a hidden temp directory and
renamed into place, so a half-unpacked layer is never used and concurrent unpackers of the
same layer both succeed. `lowerdirs(store, image)` gives the overlay order (topmost first).
"""

from __future__ import annotations

import os
import queue
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

import msgspec

from carte.image import oci
from carte.image.compression import MEDIA_TYPES, Compression, compressing, decompressed
from carte.image.digest import DigestingReader, DigestingWriter, chain_ids, digest_hex
from carte.image.errors import DigestMismatch, InvalidImage, UnsafeLayer
from carte.image.store import ImageStore, StoredImage
from carte.image.tarsafe import LayerExtractor

DONE_MARKER = "done"
SIZE_FILE = "size"
"""Beside `done`: the layer's uncompressed tar size in bytes (what `carte images` shows)."""
UNPACK_PREFIX = ".unpack-"
"""Temp directories of unpacks in progress (or killed: see `gc.remove_interrupted_unpacks`)."""


class LayerBlob(msgspec.Struct, frozen=True, kw_only=True):
    """A stored layer: its blob descriptor and the digest of its uncompressed tar."""

    descriptor: oci.Descriptor
    diff_id: str


def layer_dir(store: ImageStore, chain_id: str) -> Path:
    """The unpacked layer's directory (the overlay lowerdir), whether or not it exists yet."""
    return store.layers_dir / digest_hex(chain_id) / "diff"


def is_unpacked(store: ImageStore, chain_id: str) -> bool:
    return (store.layers_dir / digest_hex(chain_id) / DONE_MARKER).is_file()


def lowerdirs(store: ImageStore, image: StoredImage, *, trusted: bool = False) -> list[Path]:
    """The image's layer directories, topmost first, unpacking any not yet cached.

    Raises `UnsafeLayer` (hostile entry), `DigestMismatch` (a layer's content does not match
    the config's diff_id) or `InvalidImage`; a layer that failed leaves nothing behind.
    """
    diff_ids = image.config.rootfs.diff_ids
    layers = image.manifest.layers
    if len(diff_ids) != len(layers):
        raise InvalidImage(
            f"image {image.id} lists {len(layers)} layers but {len(diff_ids)} diff_ids; "
            "the image is corrupt, remove it and pull or load it again"
        )
    chains = chain_ids(diff_ids)
    for descriptor, diff_id, chain_id in zip(layers, diff_ids, chains, strict=True):
        if not is_unpacked(store, chain_id):
            unpack_layer(store, descriptor, diff_id, chain_id, trusted=trusted)
    return [layer_dir(store, chain_id) for chain_id in reversed(chains)]


@contextmanager
def unpacking(store: ImageStore) -> Iterator[Path]:
    """A temp directory in the layer cache for one unpack (hold `store.writing()` around it).
    Whatever `publish_layer` did not move into place is removed on exit, also on failure."""
    temp = Path(tempfile.mkdtemp(dir=store.layers_dir, prefix=UNPACK_PREFIX))
    try:
        yield temp
    finally:
        if temp.exists():
            shutil.rmtree(temp)


def publish_layer(store: ImageStore, temp: Path, chain_id: str, diff_id: str) -> None:
    """Mark the unpacked layer in `temp` (its ``diff`` directory) done and rename it into the
    cache under `chain_id`. A layer an equal unpack published meanwhile wins (`temp` stays, for
    the caller to remove); raises `OSError` if the rename fails otherwise."""
    (temp / DONE_MARKER).write_text(diff_id + "\n")
    try:
        os.rename(temp, store.layers_dir / digest_hex(chain_id))
    except OSError:
        if not is_unpacked(store, chain_id):
            raise


def unpack_layer(
    store: ImageStore, descriptor: oci.Descriptor, diff_id: str, chain_id: str, *, trusted: bool
) -> Path:
    """Unpack one layer blob into the cache under `chain_id` and return its directory.

    On any failure (hostile entry, digest mismatch, interruption) the temp directory is
    removed and the cache is unchanged.
    """
    with store.writing(), unpacking(store) as temp:
        diff = temp / "diff"
        diff.mkdir()
        with store.open_blob(descriptor.digest) as blob:
            unpacked_id, size = _extract(blob, diff, trusted=trusted, what=descriptor.digest)
        if unpacked_id != diff_id:
            raise DigestMismatch(
                f"layer {descriptor.digest} unpacks to {unpacked_id}, not the diff_id "
                f"{diff_id} the image config names; the image is corrupt"
            )
        (temp / SIZE_FILE).write_text(f"{size}\n")
        publish_layer(store, temp, chain_id, diff_id)
    return layer_dir(store, chain_id)


def extract_layer(source: BinaryIO, dest: Path, *, trusted: bool, what: str) -> str:
    """Extract a (possibly compressed) layer tar into `dest`; return its diffID.

    The diffID is hashed in the same pass as the extraction. Raises `UnsafeLayer` for hostile
    entries and `InvalidImage` for a corrupt stream; the caller removes `dest` on failure.
    """
    return _extract(source, dest, trusted=trusted, what=what)[0]


def _extract(source: BinaryIO, dest: Path, *, trusted: bool, what: str) -> tuple[str, int]:
    extractor = LayerExtractor(str(dest), trusted=trusted)
    try:
        with decompressed(source) as stream:
            reader = DigestingReader(stream)
            extractor.extract(reader)  # type: ignore[arg-type]
            reader.drain()
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, UnsafeLayer):
            raise
        raise InvalidImage(f"layer {what} is not a readable tar archive: {exc}") from None
    finally:
        extractor.close()
    return reader.digest, reader.size


_UNCOMPRESSED = (oci.OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar")


def unpacked_size(store: ImageStore, image: StoredImage) -> int:
    """The image's layers' uncompressed tar sizes added up (Docker's SIZE): an uncompressed
    blob's own size, else what was recorded when the layer was unpacked, else (never unpacked
    yet) the compressed size."""
    total = 0
    chains = chain_ids(image.diff_ids) if image.diff_ids else []
    for descriptor, chain_id in zip(image.manifest.layers, chains, strict=False):
        if descriptor.media_type in _UNCOMPRESSED:
            total += descriptor.size
            continue
        try:
            total += int((store.layers_dir / digest_hex(chain_id) / SIZE_FILE).read_text())
        except (OSError, ValueError):
            total += descriptor.size
    return total


def compressed_size(image: StoredImage) -> int:
    """The image's layer blobs' sizes as stored (and as a registry transfers them)."""
    return sum(layer.size for layer in image.manifest.layers)


def store_layer(
    store: ImageStore, write_tar: Callable[[BinaryIO], None], compression: Compression = "none"
) -> LayerBlob:
    """Store the tar that `write_tar` writes as a layer blob; diffID and digest in one pass.

    Layers made here (builds, commits) stay uncompressed by default, as Docker's own layer
    store keeps them: gzip at level 6 cost more than the rest of a cold build's commit, and
    `application/vnd.oci.image.layer.v1.tar` is a valid layer for any OCI consumer. Nothing
    becomes visible if `write_tar` raises.
    """
    with store.ingest() as blob, compressing(blob, compression) as compressed:  # type: ignore[arg-type]
        uncompressed = DigestingWriter(compressed)
        write_tar(uncompressed)  # type: ignore[arg-type]
    descriptor = oci.Descriptor(
        media_type=MEDIA_TYPES[compression], digest=blob.digest, size=blob.size
    )
    return LayerBlob(descriptor=descriptor, diff_id=uncompressed.digest)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def ingest_base_layer(store: ImageStore, tar: Readable, *, trusted: bool, what: str) -> LayerBlob:
    """Store the uncompressed tar read from `tar` as a bottom layer and unpack it, in one pass.

    Each chunk is parsed and extracted, hashed and written to the blob as it is read, so the
    tar is read once and never compressed (an uncompressed blob's digest is its diffID, and a
    bottom layer's chainID is its diffID). Raises `UnsafeLayer`, `InvalidImage` or `OSError`;
    on failure neither the blob nor the unpacked layer becomes visible.
    """
    with store.writing(), unpacking(store) as temp:
        diff = temp / "diff"
        diff.mkdir()
        with store.ingest() as blob:
            tee = _Tee(tar, blob)  # type: ignore[arg-type]
            extractor = LayerExtractor(str(diff), trusted=trusted)
            try:
                extractor.extract(tee)  # type: ignore[arg-type]
                tee.drain()
            except (tarfile.TarError, EOFError) as exc:
                raise InvalidImage(f"{what} is not a readable tar archive: {exc}") from None
            finally:
                extractor.close()
                tee.close()
        publish_layer(store, temp, blob.digest, blob.digest)  # a bottom layer: chain id = diff id
    descriptor = oci.Descriptor(media_type=oci.OCI_LAYER, digest=blob.digest, size=blob.size)
    return LayerBlob(descriptor=descriptor, diff_id=blob.digest)


class _Tee:
    """A reader passing on what it reads from `source` and writing it to `copy` as well, in a
    worker thread (hashing and writing release the GIL, so the copy overlaps the extraction).
    `close()` waits for the copy and raises what it failed with."""

    def __init__(self, source: Readable, copy: BinaryIO) -> None:
        self._source = source
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._failure: BaseException | None = None
        self._copier = threading.Thread(target=self._copy, args=(copy,), daemon=True)
        self._copier.start()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._chunks.put(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def _copy(self, copy: BinaryIO) -> None:
        while (data := self._chunks.get()) is not None:
            if self._failure is None:
                try:
                    copy.write(data)
                except BaseException as exc:  # raised by close(), in the reader's thread
                    self._failure = exc

    def close(self) -> None:
        if self._copier.is_alive():
            self._chunks.put(None)
            self._copier.join()
        if self._failure is not None:
            raise self._failure


_CHUNK = 1 << 20


def copy_stream(source: BinaryIO) -> Callable[[BinaryIO], None]:
    """A `write_tar` for `store_layer` that copies an existing (possibly compressed) tar."""

    def write(out: BinaryIO) -> None:
        with decompressed(source) as stream:
            while data := stream.read(1 << 20):
                out.write(data)

    return write
