"""An overlay upper dir becomes a layer that reproduces the container's view when stacked."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_tars import directory, file, make_image, make_tar

from carte.image import oci
from carte.image.layers import LayerBlob, lowerdirs, store_layer
from carte.image.store import ImageStore, StoredImage
from carte.image.upperdiff import diff_from_upper

CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points this test made; each is unmounted at the end, even on failure."""
    made: list[Path] = []
    yield made
    for target in reversed(made):
        subprocess.run(["umount", str(target)], check=False, capture_output=True)


def mount(mounts: list[Path], target: Path, options: str) -> Path:
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)
    mounts.append(target)
    return target


def view(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every path under `root` with its mode and content (or link target)."""
    seen: dict[str, tuple[int, bytes | str | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            content: bytes | str | None = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        else:
            content = None
        seen[str(path.relative_to(root))] = (st.st_mode, content)
    return seen


def stack(store: ImageStore, base: StoredImage, layer: LayerBlob) -> StoredImage:
    config = oci.ImageConfig(
        architecture="amd64",
        os="linux",
        rootfs=oci.RootFS(diff_ids=(*base.diff_ids, layer.diff_id)),
    )
    manifest = oci.Manifest(
        schema_version=2,
        media_type=oci.OCI_MANIFEST,
        config=store.put_blob(oci.encode(config), oci.OCI_CONFIG),
        layers=(*base.manifest.layers, layer.descriptor),
    )
    return store.add_image(store.put_blob(oci.encode(manifest), oci.OCI_MANIFEST), ("stacked",))


def test_committed_upper_dir_reproduces_the_merged_view(
    store: ImageStore, tmp_path: Path, mounts: list[Path]
) -> None:
    base = make_image(
        store,
        [
            make_tar(
                [
                    directory("etc"),
                    file("etc/keep", b"k"),
                    file("etc/drop", b"d"),
                    directory("var/cache"),
                    file("var/cache/old", b"o"),
                ]
            )
        ],
        "base",
    )
    (lower,) = lowerdirs(store, base)
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    merged = mount(mounts, tmp_path / "merged", f"lowerdir={lower},upperdir={upper},workdir={work}")
    (merged / "etc/drop").unlink()
    shutil.rmtree(merged / "var/cache")
    (merged / "var/cache").mkdir()
    (merged / "var/cache/new").write_bytes(b"n")
    (merged / "bin").mkdir()
    (merged / "bin/tool").write_bytes(b"tool")
    os.chmod(merged / "bin/tool", 0o4755)
    os.setxattr(merged / "bin/tool", "security.capability", CAPABILITY)
    os.link(merged / "bin/tool", merged / "bin/tool-alias")
    os.symlink("tool", merged / "bin/link")
    expected = view(merged)
    subprocess.run(["umount", str(merged)], check=True)
    mounts.remove(merged)

    layer = store_layer(store, lambda out: diff_from_upper(upper, out))
    result = stack(store, base, layer)
    dirs = lowerdirs(store, result)
    assert (dirs[0] / ".wh.drop").exists() is False  # whiteouts are devices again, not files
    readonly = mount(mounts, tmp_path / "check", "lowerdir=" + ":".join(map(str, dirs)))
    assert view(readonly) == expected
    assert os.getxattr(readonly / "bin/tool", "security.capability") == CAPABILITY
    assert (readonly / "bin/tool").stat().st_ino == (readonly / "bin/tool-alias").stat().st_ino


def test_diff_is_reproducible_with_source_date_epoch(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "b/c").mkdir(parents=True)
    (tree / "z").write_bytes(b"z")
    (tree / "a").write_bytes(b"a")
    (tree / "b/c/d").write_bytes(b"d")
    first, second = io.BytesIO(), io.BytesIO()
    diff_from_upper(tree, first, source_date_epoch=1_000_000)
    os.utime(tree / "a", (2_000_000_000, 2_000_000_000))
    diff_from_upper(tree, second, source_date_epoch=1_000_000)
    assert first.getvalue() == second.getvalue()
    with tarfile.open(fileobj=io.BytesIO(first.getvalue())) as archive:
        names = archive.getnames()
        assert {m.mtime for m in archive.getmembers()} == {1_000_000}
    assert names == ["a", "b", "b/c", "b/c/d", "z"]
