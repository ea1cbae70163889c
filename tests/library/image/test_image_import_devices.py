"""`carte import` of a root filesystem made by debootstrap or `tar` of a live root: its device
nodes under /dev are left out with a notice (Carte makes /dev), while a device node anywhere
else, and any device node in a pulled or loaded layer, still refuses the layer."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from image_tars import chardev, directory, file, make_image, make_tar

from carte.image.errors import UnsafeLayer
from carte.image.importer import import_rootfs
from carte.image.layers import lowerdirs
from carte.image.store import ImageStore

LONG = "dev/" + "d" * 120  # a name only a pax or GNU long-name header can carry


def rootfs_with_devices(where: Path) -> Path:
    """A directory like debootstrap leaves: real device nodes in dev/, files around them."""
    root = where / "rootfs"
    (root / "dev/pts").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("game\n")
    for name, major, minor in (("null", 1, 3), ("full", 1, 7), ("zero", 1, 5), ("tty", 5, 0)):
        os.mknod(root / "dev" / name, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    os.mknod(root / "dev/loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mknod(root / LONG, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.symlink("/proc/self/fd", root / "dev/fd")
    (root / "dev/keep.txt").write_text("a plain file under /dev stays\n")
    return root


def entries(store: ImageStore, digest: str) -> dict[str, str]:
    """The stored layer's entries: name -> tar type."""
    with tarfile.open(fileobj=io.BytesIO(store.read_blob(digest)), mode="r|") as archive:
        return {m.name.removeprefix("./"): m.type.decode() for m in archive}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_gnu_tar_of_a_root_with_dev_nodes_imports(
    store: ImageStore, tmp_path: Path, compress: bool
) -> None:
    root = rootfs_with_devices(tmp_path)
    tar = tmp_path / ("rootfs.tar.gz" if compress else "rootfs.tar")
    subprocess.run(
        ["tar", "--numeric-owner", "-C", str(root), "-czf" if compress else "-cf", str(tar), "."],
        check=True,
    )
    notices: list[str] = []
    image = import_rootfs(store, tar, "debian:dev", notice=notices.append)

    (notice,) = notices
    assert "6 device node(s) under /dev" in notice and "dev/full" in notice and "\n" not in notice
    stored = entries(store, image.manifest.layers[0].digest)
    assert not any(
        kind in (tarfile.CHRTYPE, tarfile.BLKTYPE) for kind in map(str.encode, stored.values())
    )
    assert {"etc/hostname", "dev/keep.txt", "dev/fd", "dev/pts"} <= set(stored)
    (layer,) = lowerdirs(store, image)
    assert (layer / "etc/hostname").read_text() == "game\n"
    assert (layer / "dev/keep.txt").is_file() and os.readlink(layer / "dev/fd") == "/proc/self/fd"
    assert not (layer / "dev/full").exists() and not (layer / LONG).exists()

    # The stored layer is an ordinary one: unpacked again as strictly as a pulled layer.
    shutil.rmtree(store.layers_dir)
    store.layers_dir.mkdir()
    (again,) = lowerdirs(store, image, trusted=False)
    assert (again / "etc/hostname").is_file()


def test_pax_headers_of_a_dropped_node_go_with_it(store: ImageStore, tmp_path: Path) -> None:
    tar = tmp_path / "pax.tar"
    tar.write_bytes(
        make_tar(
            [directory("dev"), chardev(LONG, 1, 3), file("dev/after", b"kept"), file("x", b"1")]
        )
    )
    notices: list[str] = []
    image = import_rootfs(store, tar, "pax", notice=notices.append)
    assert len(notices) == 1 and LONG in notices[0]
    assert set(entries(store, image.manifest.layers[0].digest)) == {"dev", "dev/after", "x"}
    (layer,) = lowerdirs(store, image)
    assert (layer / "dev/after").read_bytes() == b"kept"


def test_a_root_without_device_nodes_imports_unchanged(
    store: ImageStore, busybox_tar: Path
) -> None:
    notices: list[str] = []
    image = import_rootfs(store, busybox_tar, "bb", notice=notices.append)
    assert notices == []
    with open(busybox_tar, "rb") as original:
        assert store.read_blob(image.manifest.layers[0].digest) == original.read()


def test_device_node_outside_dev_still_refuses_the_import(
    store: ImageStore, tmp_path: Path
) -> None:
    tar = tmp_path / "odd.tar"
    tar.write_bytes(make_tar([chardev("dev/null", 1, 3), chardev("etc/sda", 8, 0)]))
    with pytest.raises(UnsafeLayer, match='"etc/sda" is a device node'):
        import_rootfs(store, tar, "odd")
    assert store.images() == []


def test_pulled_or_loaded_layer_with_dev_nodes_stays_refused(store: ImageStore) -> None:
    image = make_image(store, [make_tar([chardev("dev/full", 1, 7)])], "pulled")
    with pytest.raises(UnsafeLayer, match='"dev/full" is a device node'):
        lowerdirs(store, image)
