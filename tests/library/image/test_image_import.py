"""`import_rootfs`: a rootfs tarball becomes a runnable one-layer image."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from carte.api.errors import InvalidArgument
from carte.image import oci
from carte.image.errors import InvalidImage
from carte.image.importer import import_rootfs
from carte.image.layers import lowerdirs
from carte.image.store import ImageStore


def test_import_gives_a_one_layer_image(store: ImageStore, busybox_tar: Path) -> None:
    image = import_rootfs(store, busybox_tar, "busybox:1")
    assert image.names == ("busybox:1",)
    assert image.manifest.media_type == oci.OCI_MANIFEST
    (layer,) = image.manifest.layers
    # A local layer is kept uncompressed (as `docker import` keeps it): its digest is its diffID.
    assert layer.media_type == oci.OCI_LAYER
    assert store.read_blob(layer.digest) == busybox_tar.read_bytes()
    assert image.config.rootfs.diff_ids == (layer.digest,)
    assert (image.config.architecture, image.config.os) == ("amd64", "linux")
    assert image.config.config is not None and image.config.config.cmd is None
    assert image.config.history and image.config.history[0].created_by == "carte import"
    (root,) = lowerdirs(store, image)
    assert os.access(root / "bin/busybox", os.X_OK)
    assert os.readlink(root / "bin/sh") == "/bin/busybox"


def test_import_is_idempotent_for_the_layer(store: ImageStore, busybox_tar: Path) -> None:
    first = import_rootfs(store, busybox_tar, "a")
    second = import_rootfs(store, busybox_tar, "b")
    assert first.manifest.layers == second.manifest.layers
    assert first.diff_ids == second.diff_ids
    assert len(list(store.layers_dir.iterdir())) == 1


def test_import_with_source_date_epoch_is_reproducible(
    store: ImageStore, busybox_tar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = import_rootfs(store, busybox_tar, "a")
    second = import_rootfs(store, busybox_tar, "b")
    assert first.id == second.id
    assert first.config.created == "2023-11-14T22:13:20Z"
    assert first.manifest.annotations == {oci.CREATED: "2023-11-14T22:13:20Z"}


def test_import_of_gzipped_tar_and_changes(
    store: ImageStore, busybox_tar: Path, tmp_path: Path
) -> None:
    packed = tmp_path / "rootfs.tar.gz"
    packed.write_bytes(gzip.compress(busybox_tar.read_bytes()))
    changes = oci.ContainerConfig(cmd=("/bin/sh",), env=("PATH=/bin",), working_dir="/tmp")
    image = import_rootfs(store, packed, "gz", changes)
    plain = import_rootfs(store, busybox_tar, "plain")
    assert image.diff_ids == plain.diff_ids
    assert image.config.config == changes


def test_import_errors_are_one_line(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"cannot read .*missing\.tar"):
        import_rootfs(store, tmp_path / "missing.tar", "x")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(InvalidImage, match="not a readable tar"):
        import_rootfs(store, garbage, "x")
    assert store.images() == []
