"""Disk accounting in the store (issue 15 item 7): an image's size is its layers unpacked, as
Docker users read SIZE, beside the compressed size a registry moves; garbage collection also
forgets the build cache's records of the layers it removed."""

from __future__ import annotations

import gzip
import os

import pytest
from image_tars import add_layer, file, make_image, make_tar

from carte.build import BuildCache
from carte.build._cache import StepRecord
from carte.image.gc import build_records, collect_garbage, forget_records_of
from carte.image.layers import LayerBlob, compressed_size, lowerdirs, unpacked_size
from carte.image.store import ImageStore

pytestmark = pytest.mark.root  # unpacking keeps owners (chown)

KEPT, GONE, NO_LAYER = ("sha256:" + c * 64 for c in "abc")
# Compresses about 100:1, so the two sizes cannot be mistaken for each other.
TEXT = b"the same line of a log file, over and over again\n" * 8000


def test_size_is_the_unpacked_layers_beside_the_compressed_size(store: ImageStore) -> None:
    tar = make_tar([file("var/log/big.log", TEXT)])
    image = make_image(store, [tar], "gz:1")  # a gzip layer, as pulled images have
    blob = store.read_blob(image.manifest.layers[0].digest)
    assert gzip.decompress(blob) == tar
    assert compressed_size(image) == len(blob) < len(tar) // 20
    lowerdirs(store, image)  # unpacking records the layer's uncompressed size
    assert unpacked_size(store, image) == len(tar)

    local = make_image(store, [], None)
    assert unpacked_size(store, local) == compressed_size(local) == 0
    plain = add_layer(store, tar, "none")  # built and imported layers: the blob is the tar
    assert plain.descriptor.size == len(tar) and plain.descriptor.digest == plain.diff_id


def test_cached_layers_stay_until_their_image_is_removed_with_its_records(
    store: ImageStore,
) -> None:
    kept = make_image(store, [make_tar([file("kept", b"kept")])], "kept:1")
    gone = make_image(store, [make_tar([file("gone", b"gone")])], "gone:1")
    lowerdirs(store, gone)
    cache = BuildCache(store)
    for key, image in ((KEPT, kept), (GONE, gone)):
        layer = LayerBlob(descriptor=image.manifest.layers[0], diff_id=image.diff_ids[0])
        cache.put(key, StepRecord(layer=layer))
    cache.put(NO_LAYER, StepRecord())  # an ENV step: no layer
    assert len(build_records(store)) == 3

    store.remove(gone)
    # A cached step's layer stays for the cache (its manifest and config go).
    assert gone.manifest.layers[0].digest not in collect_garbage(store).blobs
    assert forget_records_of(store, gone) == 1  # what image rm does
    collected = collect_garbage(store)
    assert gone.manifest.layers[0].digest in collected.blobs
    assert len(build_records(store)) == 2
    assert cache.get(KEPT) is not None
    assert cache._path(NO_LAYER).exists()
    assert os.listdir(store.layers_dir) == []  # the unpacked layer of "gone" went too
