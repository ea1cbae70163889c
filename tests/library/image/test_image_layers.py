"""Layers unpack into overlay form once per chainID and behave right under a real overlay mount."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_tars import (
    MTIME,
    add_layer,
    chardev,
    directory,
    file,
    hardlink,
    make_image,
    make_tar,
    symlink,
)

from carte.image.digest import chain_ids
from carte.image.errors import DigestMismatch, InvalidImage
from carte.image.layers import extract_layer, is_unpacked, lowerdirs
from carte.image.store import ImageStore
from carte.image.tarsafe import OPAQUE_XATTR

CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service+ep


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[Path, list[Path]]]:
    """A read-only overlay mount point; the test fills in lowerdirs, the fixture unmounts."""
    target = tmp_path / "merged"
    target.mkdir()
    lowers: list[Path] = []
    yield target, lowers
    subprocess.run(["umount", str(target)], check=False, capture_output=True)


def mount_overlay(target: Path, lowers: list[Path]) -> None:
    options = "lowerdir=" + ":".join(str(p) for p in lowers)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)


def test_whiteouts_and_opaque_dirs_hide_lower_content(
    store: ImageStore, overlay: tuple[Path, list[Path]]
) -> None:
    lower = make_tar(
        [
            directory("a"),
            file("a/1", b"one"),
            file("a/2", b"two"),
            file("b", b"bee"),
            directory("c"),
            file("c/x", b"old"),
        ]
    )
    upper = make_tar([file("a/.wh.1"), file(".wh.b"), file("c/.wh..wh..opq"), file("c/y", b"new")])
    image = make_image(store, [lower, upper], "layered")
    dirs = lowerdirs(store, image)
    assert dirs == [lowerdirs(store, image)[0], dirs[1]] and len(dirs) == 2
    top = dirs[0]
    assert stat.S_ISCHR(os.lstat(top / "b").st_mode) and os.lstat(top / "b").st_rdev == 0
    assert os.getxattr(top / "c", OPAQUE_XATTR) == b"y"
    target, lowers = overlay
    lowers.extend(dirs)
    mount_overlay(target, lowers)
    assert sorted(os.listdir(target)) == ["a", "c"]
    assert sorted(os.listdir(target / "a")) == ["2"]
    assert sorted(os.listdir(target / "c")) == ["y"]
    assert (target / "c/y").read_bytes() == b"new"


def test_links_ownership_modes_xattrs_and_mtimes_survive(store: ImageStore) -> None:
    layer = make_tar(
        [
            directory("bin", mode=0o751, uid=10, gid=20),
            file(
                "bin/ping",
                b"elf",
                mode=0o4755,
                uid=0,
                gid=0,
                xattrs={"security.capability": CAPABILITY, "user.note": b"hi"},
            ),
            hardlink("bin/ping6", "bin/ping"),
            symlink("bin/sh", "/bin/busybox"),
            file("home/user/f", b"x", mode=0o600, uid=1000, gid=1000),
        ]
    )
    image = make_image(store, [layer], "attrs")
    (root,) = lowerdirs(store, image)
    ping = os.lstat(root / "bin/ping")
    assert stat.S_IMODE(ping.st_mode) == 0o4755
    assert ping.st_nlink == 2 and os.lstat(root / "bin/ping6").st_ino == ping.st_ino
    assert os.getxattr(root / "bin/ping", "security.capability") == CAPABILITY
    assert os.getxattr(root / "bin/ping", "user.note") == b"hi"
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    bin_dir = os.lstat(root / "bin")
    assert (stat.S_IMODE(bin_dir.st_mode), bin_dir.st_uid, bin_dir.st_gid) == (0o751, 10, 20)
    assert bin_dir.st_mtime == MTIME and ping.st_mtime == MTIME
    home_file = os.lstat(root / "home/user/f")
    assert (home_file.st_uid, home_file.st_gid, stat.S_IMODE(home_file.st_mode)) == (
        1000,
        1000,
        0o600,
    )


def test_forged_overlay_xattrs_are_dropped(store: ImageStore) -> None:
    forged = file("d", b"", xattrs={"trusted.overlay.redirect": b"/etc", "user.ok": b"1"})
    (root,) = lowerdirs(store, make_image(store, [make_tar([forged])], "forged"))
    assert os.listxattr(root / "d") == ["user.ok"]


def test_layer_is_unpacked_once_and_shared(store: ImageStore) -> None:
    base = make_tar([file("shared", b"s")])
    first = make_image(store, [base], "first")
    second = make_image(store, [base, make_tar([file("more", b"m")])], "second")
    (shared,) = lowerdirs(store, first)
    inode = os.lstat(shared / "shared").st_ino
    assert lowerdirs(store, second)[1] == shared
    assert os.lstat(shared / "shared").st_ino == inode
    assert is_unpacked(store, chain_ids(second.diff_ids)[1])
    assert sorted(p.name for p in store.layers_dir.iterdir()) == sorted(
        c.removeprefix("sha256:") for c in chain_ids(second.diff_ids)
    )


def test_zstd_layers_are_written_and_read(store: ImageStore, tmp_path: Path) -> None:
    tar = make_tar([file("z", b"zstd content")])
    blob = add_layer(store, tar, "zstd")
    assert store.read_blob(blob.descriptor.digest)[:4] == b"\x28\xb5\x2f\xfd"
    assert blob.descriptor.media_type.endswith("+zstd")
    assert blob.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    dest = tmp_path / "out"
    dest.mkdir()
    with store.open_blob(blob.descriptor.digest) as source:
        assert extract_layer(source, dest, trusted=False, what="zstd") == blob.diff_id
    assert (dest / "z").read_bytes() == b"zstd content"


def test_diff_id_and_digest_come_from_one_pass(store: ImageStore, tmp_path: Path) -> None:
    tar = make_tar([file("f", b"data" * 1000)])
    blob = add_layer(store, tar)
    compressed = store.read_blob(blob.descriptor.digest)
    assert blob.descriptor.digest == "sha256:" + hashlib.sha256(compressed).hexdigest()
    assert blob.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert gzip.decompress(compressed) == tar
    assert compressed[4:8] == b"\0\0\0\0"  # gzip mtime fixed at 0
    assert add_layer(store, tar).descriptor.digest == blob.descriptor.digest
    dest = tmp_path / "out"
    dest.mkdir()
    assert extract_layer(io.BytesIO(compressed), dest, trusted=False, what="t") == blob.diff_id


def test_layer_not_matching_its_diff_id_is_refused(store: ImageStore) -> None:
    image = make_image(store, [make_tar([file("a", b"1")])], "liar")
    blob = add_layer(store, make_tar([file("a", b"2")]))
    lying = image.manifest.layers[0]
    # Swap the blob content under the stored digest to simulate a corrupted store.
    store.blob_path(lying.digest).write_bytes(store.read_blob(blob.descriptor.digest))
    with pytest.raises(DigestMismatch, match="not the diff_id"):
        lowerdirs(store, image)
    assert list(store.layers_dir.iterdir()) == []  # neither the layer nor its temp dir


def test_device_nodes_from_trusted_builds(store: ImageStore, tmp_path: Path) -> None:
    dest = tmp_path / "trusted"
    dest.mkdir()
    tar = make_tar([chardev("null", 1, 3)])
    extract_layer(io.BytesIO(tar), dest, trusted=True, what="local build")
    assert os.lstat(dest / "null").st_rdev == os.makedev(1, 3)


def test_multi_member_and_corrupt_gzip_layers(tmp_path: Path) -> None:
    tar = make_tar([file("big", os.urandom(1 << 20)), file("small", b"s")])
    split = len(tar) // 3
    multi = gzip.compress(tar[:split]) + gzip.compress(tar[split:])
    dest = tmp_path / "multi"
    dest.mkdir()
    digest = extract_layer(io.BytesIO(multi), dest, trusted=False, what="multi")
    assert digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert (dest / "small").read_bytes() == b"s"
    corrupt = bytearray(gzip.compress(tar))
    corrupt[len(corrupt) // 2] ^= 0xFF
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(InvalidImage, match="layer corrupt-one is not a readable tar"):
        extract_layer(io.BytesIO(bytes(corrupt)), broken, trusted=False, what="corrupt-one")
