"""Layers keep their holes (issue 11, item 10): a sparse file in a layer tar, in any of GNU
tar's sparse formats, takes its real size on disk once unpacked, and so do long runs of zeros
in ordinary members; an unpack interrupted by a kill leaves nothing the next start keeps."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from image_tars import file, make_tar

from carte.image.gc import remove_interrupted_unpacks
from carte.image.importer import import_rootfs
from carte.image.layers import extract_layer, lowerdirs
from carte.image.store import ImageStore

pytestmark = [pytest.mark.root, pytest.mark.kernel]

MIB = 1 << 20
SPARSE_SIZE = 256 * MIB
PIECES = {0: b"head", 100 * MIB + 5: b"middle" * 1000, SPARSE_SIZE - 3: b"end"}
PIECES |= {n * 20 * MIB + 7: b"piece %d" % n for n in range(6, 12)}  # > 4: GNU extension headers


def sparse_tar(tmp_path: Path, tar_format: str) -> Path:
    """A tar, written by GNU tar with --sparse, of one 256 MiB file holding nine pieces."""
    tree = tmp_path / "tree"
    tree.mkdir()
    big = tree / "big.img"
    with open(big, "wb") as out:
        out.truncate(SPARSE_SIZE)
        for offset, data in PIECES.items():
            out.seek(offset)
            out.write(data)
    archive = tmp_path / "sparse.tar"
    tar_format, _, version = tar_format.partition(":")
    options = [f"--format={tar_format}"] + ([f"--sparse-version={version}"] if version else [])
    subprocess.run(
        ["tar", "--sparse", *options, "-cf", str(archive), "-C", str(tree), "."], check=True
    )
    assert archive.stat().st_size < 100_000
    return archive


def on_disk(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def assert_holes_kept(path: Path) -> None:
    assert path.stat().st_size == SPARSE_SIZE
    with open(path, "rb") as data:
        for offset, piece in PIECES.items():
            data.seek(offset)
            assert data.read(len(piece)) == piece
        data.seek(50 * MIB)
        assert data.read(4096) == bytes(4096)
    assert on_disk(path) < 2 * MIB, f"{on_disk(path)} bytes on disk for a sparse file"


@pytest.mark.parametrize("tar_format", ["gnu", "posix:0.0", "posix:0.1", "posix:1.0"])
def test_a_sparse_member_is_unpacked_with_its_holes(
    tmp_path: Path, store: ImageStore, tar_format: str
) -> None:
    archive = sparse_tar(tmp_path, tar_format)
    with tarfile.open(archive) as check:
        assert check.getmember("./big.img").issparse()
    image = import_rootfs(store, archive, "sparse:1")
    (layer,) = lowerdirs(store, image)
    assert_holes_kept(layer / "big.img")


def test_zeros_in_an_ordinary_member_become_holes(tmp_path: Path) -> None:
    data = b"start" + bytes(40 * MIB) + b"finish"
    dest = tmp_path / "diff"
    dest.mkdir()
    tar_path = tmp_path / "zeros.tar"
    tar_path.write_bytes(make_tar([file("zeros.bin", data)]))
    with open(tar_path, "rb") as source:
        extract_layer(source, dest, trusted=False, what="zeros.tar")
    written = dest / "zeros.bin"
    assert written.read_bytes() == data
    assert on_disk(written) < 4 * MIB


def test_interrupted_unpacks_are_removed_unless_a_writer_is_busy(store: ImageStore) -> None:
    left = store.layers_dir / ".unpack-killed"
    (left / "diff" / "etc").mkdir(parents=True)
    (left / "diff" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    with store.writing():
        assert remove_interrupted_unpacks(store) == []
        assert left.exists()
    assert remove_interrupted_unpacks(store) == [".unpack-killed"]
    assert not left.exists()
