"""Hostile layers are refused with the entry named, and nothing outside the layer is touched."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

import pytest
from image_tars import Entry, chardev, directory, file, hardlink, make_image, make_tar, symlink

from carte.image.errors import InvalidImage, UnsafeLayer
from carte.image.importer import import_rootfs
from carte.image.layers import extract_layer, lowerdirs
from carte.image.store import ImageStore


def refused(store: ImageStore, entries: list[Entry], entry_name: str) -> None:
    """Import `entries` as a layer; it must be refused naming `entry_name`, leaving nothing."""
    image = make_image(store, [make_tar(entries)], None)
    with pytest.raises(UnsafeLayer) as caught:
        lowerdirs(store, image)
    message = str(caught.value)
    assert f'"{entry_name}"' in message and "\n" not in message
    assert list(store.layers_dir.iterdir()) == []  # the partial layer dir is gone


def test_dotdot_entry(store: ImageStore, tmp_path: Path) -> None:
    name = f"../../../{uuid.uuid4().hex}"
    refused(store, [file("ok", b"1"), file(name, b"pwned")], name)
    assert not any(p.name == name.rsplit("/", 1)[1] for p in tmp_path.rglob("*"))


def test_absolute_entry(store: ImageStore) -> None:
    target = Path(f"/etc/carte-test-{uuid.uuid4().hex}")
    refused(store, [file(str(target), b"pwned")], str(target))
    assert not target.exists()


def test_symlink_then_write_through_it(store: ImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    refused(
        store,
        [symlink("escape", str(outside)), file("escape/planted", b"pwned")],
        "escape/planted",
    )
    assert list(outside.iterdir()) == []


def test_relative_symlink_then_directory_through_it(store: ImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    depth = "../" * 12
    refused(
        store,
        [symlink("up", depth + str(outside).lstrip("/")), directory("up/made")],
        "up/made",
    )
    assert list(outside.iterdir()) == []


def test_hardlink_to_host_file(store: ImageStore) -> None:
    before = Path("/etc/passwd").stat().st_nlink
    refused(store, [hardlink("passwd", "/etc/passwd")], "passwd")
    refused(store, [hardlink("passwd", "../../../../../../etc/passwd")], "passwd")
    assert Path("/etc/passwd").stat().st_nlink == before


def test_hardlink_through_symlink_to_outside(store: ImageStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    refused(store, [symlink("dir", str(tmp_path)), hardlink("stolen", "dir/secret")], "stolen")
    assert secret.stat().st_nlink == 1


def test_device_node_from_untrusted_layer(store: ImageStore) -> None:
    refused(store, [chardev("dev/sda", 8, 0)], "dev/sda")


def test_import_refuses_hostile_tar_and_records_no_image(store: ImageStore, tmp_path: Path) -> None:
    tar = tmp_path / "evil.tar"
    tar.write_bytes(make_tar([file("fine", b"ok"), file("../evil", b"x")]))
    with pytest.raises(UnsafeLayer, match=re.escape('"../evil"')):
        import_rootfs(store, tar, "evil:latest")
    assert store.images() == []
    assert list(store.layers_dir.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_truncated_tar_is_a_clean_error(store: ImageStore, tmp_path: Path) -> None:
    data = make_tar([file("big", b"x" * 100_000)])[:5000]
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(InvalidImage, match="not a readable tar"):
        extract_layer(io.BytesIO(data), dest, trusted=False, what="truncated")
