"""The content store: OCI layout on disk, tags, lookup, atomic blobs, locking, gc."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from image_tars import file, make_image, make_tar

from carte.image import oci
from carte.image.digest import chain_ids, digest_hex, sha256_digest
from carte.image.errors import AmbiguousImage, DigestMismatch, ImageNotFound, InvalidReference
from carte.image.gc import collect_garbage
from carte.image.importer import import_rootfs
from carte.image.layers import lowerdirs
from carte.image.store import ImageStore


def test_skopeo_reads_imported_image_from_the_layout(store: ImageStore, busybox_tar: Path) -> None:
    image = import_rootfs(store, busybox_tar, "busybox")
    result = subprocess.run(
        ["skopeo", "inspect", f"oci:{store.root}:busybox:latest"],
        check=True,
        capture_output=True,
        text=True,
    )
    inspected = json.loads(result.stdout)
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Layers"] == [image.manifest.layers[0].digest]
    assert (inspected["Architecture"], inspected["Os"]) == ("amd64", "linux")
    layout = json.loads((store.root / "oci-layout").read_text())
    assert layout == {"imageLayoutVersion": "1.0.0"}


def test_lookup_by_name_id_prefix_and_digest(store: ImageStore) -> None:
    image = make_image(store, [make_tar([file("a", b"1")])], "me/app:1.0")
    for query in (
        "me/app:1.0",
        "docker.io/me/app:1.0",
        image.id,
        digest_hex(image.id),
        digest_hex(image.id)[:12],
        image.manifest_digest,
        f"me/app@{image.manifest_digest}",
    ):
        assert store.get(query).id == image.id, query
    with pytest.raises(ImageNotFound, match=r'image "me/app" not found locally; .*carte pull'):
        store.get("me/app")  # :latest is implied
    official = make_image(store, [make_tar([file("b", b"2")])], "docker.io/library/alpine")
    assert official.names == ("alpine:latest",)
    assert store.get("alpine").id == store.get("index.docker.io/library/alpine:latest").id


def test_ambiguous_id_prefix_names_the_problem(store: ImageStore) -> None:
    by_first_digit: dict[str, str] = {}
    n = 0
    while True:  # 17 images guarantee two ids sharing their first hex digit
        image = make_image(store, [make_tar([file("f", str(n).encode())])], None)
        first = digest_hex(image.id)[0]
        if first in by_first_digit:
            break
        by_first_digit[first] = image.id
        n += 1
    with pytest.raises(AmbiguousImage, match=f'prefix "{first}" matches 2 images'):
        store.get(first)


def test_tags_move_and_untagged_images_stay_until_removed(store: ImageStore) -> None:
    old = make_image(store, [make_tar([file("v", b"1")])], "web:1")
    new = make_image(store, [make_tar([file("v", b"2")])], "web:2")
    store.tag(new, "web:1")
    assert store.get("web:1").id == new.id
    assert sorted(store.get(new.id).names) == ["web:1", "web:2"]
    assert store.get(old.id).names == ()  # dangling, like Docker's <none>:<none>
    store.untag("web:2")
    store.untag("web:1")
    assert {i.id for i in store.images()} == {old.id}
    with pytest.raises(ImageNotFound):
        store.untag("web:1")


def test_digest_mismatch_stores_nothing(store: ImageStore) -> None:
    wrong = sha256_digest(b"something else")
    with pytest.raises(DigestMismatch, match="nothing was stored"), store.ingest(wrong) as blob:
        blob.write(b"payload")
    assert list(store.blobs.iterdir()) == []
    assert [p.name for p in store.ingest_dir.iterdir()] == ["gc.lock"]


def test_interrupted_write_leaves_no_blob_visible(store: ImageStore) -> None:
    with pytest.raises(KeyboardInterrupt), store.ingest() as blob:
        blob.write(b"half of a layer")
        raise KeyboardInterrupt
    assert list(store.blobs.iterdir()) == []
    assert not store.has_blob(sha256_digest(b"half of a layer"))


def test_tagging_from_two_processes_loses_no_tag(store: ImageStore) -> None:
    image = make_image(store, [make_tar([file("x", b"x")])], "base")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from carte.image.store import ImageStore
        store = ImageStore(Path({str(store.root)!r}))
        image = store.get("base")
        for n in range(25):
            store.tag(image, f"child:{{n}}")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    for n in range(25):
        store.tag(image, f"parent:{n}")
    assert child.wait(timeout=60) == 0
    names = set(store.get("base").names)
    assert {f"child:{n}" for n in range(25)} <= names
    assert {f"parent:{n}" for n in range(25)} <= names


def test_gc_removes_unreferenced_blobs_and_layers_only(store: ImageStore) -> None:
    kept = make_image(store, [make_tar([file("keep", b"k")])], "kept")
    gone = make_image(store, [make_tar([file("gone", b"g")])], "gone")
    lowerdirs(store, kept)
    lowerdirs(store, gone)
    gone_blobs = {gone.manifest_digest, gone.id, gone.manifest.layers[0].digest}
    store.remove(gone)
    collected = collect_garbage(store)
    assert set(collected.blobs) == gone_blobs
    assert collected.layers == tuple(chain_ids(gone.diff_ids))
    assert all(not store.has_blob(d) for d in gone_blobs)
    assert [p.read_bytes() for p in (lowerdirs(store, kept)[0] / "keep",)] == [b"k"]
    assert store.has_blob(kept.manifest.layers[0].digest)
    assert collect_garbage(store).blobs == ()


def test_gc_keeps_layers_in_use_by_containers(store: ImageStore) -> None:
    image = make_image(store, [make_tar([file("in-use", b"u")])], "used")
    (layer,) = lowerdirs(store, image)
    store.remove(image)
    collect_garbage(store, keep_chain_ids=chain_ids(image.diff_ids))
    assert (layer / "in-use").read_bytes() == b"u"


def test_index_is_valid_oci(store: ImageStore) -> None:
    make_image(store, [make_tar([file("a")])], "one:tag")
    index = json.loads((store.root / "index.json").read_text())
    assert index["schemaVersion"] == 2
    (entry,) = index["manifests"]
    assert entry["mediaType"] == oci.OCI_MANIFEST
    assert entry["annotations"] == {oci.REF_NAME: "one:tag"}


def test_a_digest_is_not_a_tag(store: ImageStore) -> None:
    image = make_image(store, [make_tar([file("d")])], None)
    with pytest.raises(InvalidReference, match="names a digest"):
        store.tag(image, f"app@{image.manifest_digest}")
