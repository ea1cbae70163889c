"""Image archives: save/load round trips, interop with podman both ways, hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_tars import file, make_tar
from support.podman import Podman, podman_in

from carte.image.archive import load, save
from carte.image.errors import DigestMismatch, InvalidImage, UnsafeLayer
from carte.image.importer import import_rootfs
from carte.image.layers import lowerdirs
from carte.image.store import ImageStore


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    with podman_in(tmp_path / "podman") as private:
        yield private


def archive_of(store: ImageStore, names: list[str], fmt: str, path: Path) -> Path:
    with open(path, "wb") as out:
        save(store, names, out, fmt)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_round_trip_keeps_id_tags_and_content(
    fmt: str, store: ImageStore, busybox_tar: Path, tmp_path: Path
) -> None:
    image = import_rootfs(store, busybox_tar, "bb:1")
    saved = archive_of(store, ["bb:1"], fmt, tmp_path / "saved.tar")
    other = ImageStore(tmp_path / "other")
    (loaded,) = load(other, saved)
    assert (loaded.id, loaded.names) == (image.id, ("bb:1",))
    assert loaded.diff_ids == image.diff_ids
    (root,) = lowerdirs(other, loaded)
    assert (root / "bin/busybox").read_bytes() == (
        lowerdirs(store, image)[0] / "bin/busybox"
    ).read_bytes()


def test_docker_archive_layout_is_what_docker_save_writes(
    store: ImageStore, busybox_tar: Path, tmp_path: Path
) -> None:
    image = import_rootfs(store, busybox_tar, "bb:1")
    saved = archive_of(store, ["bb:1"], "docker", tmp_path / "d.tar")
    with tarfile.open(saved) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = archive.extractfile(manifest[0]["Layers"][0])
        assert layer is not None
        assert "sha256:" + hashlib.sha256(layer.read()).hexdigest() == image.diff_ids[0]
        repositories = json.load(archive.extractfile("repositories"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["bb:1"]
    assert manifest[0]["Config"] == image.id.removeprefix("sha256:") + ".json"
    assert list(repositories) == ["bb"]


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_podman_loads_and_runs_what_carte_saved(
    fmt: str, store: ImageStore, busybox_tar: Path, tmp_path: Path, podman: Podman
) -> None:
    image = import_rootfs(store, busybox_tar, "carte-bb:1")
    saved = archive_of(store, ["carte-bb:1"], fmt, tmp_path / "saved.tar")
    podman("load", "-i", str(saved))
    assert podman(
        "image", "inspect", "--format", "{{.Id}}", "carte-bb:1"
    ).strip() == image.id.removeprefix("sha256:")
    assert (
        podman("run", "--rm", "--network", "none", "carte-bb:1", "/bin/busybox", "echo", "hi")
        == "hi\n"
    )


@pytest.mark.parametrize(
    ("fmt", "expected_name"),
    [("oci-archive", "localhost/pbb:2"), ("docker-archive", "localhost/pbb:2")],
)
def test_carte_loads_what_podman_saved(
    fmt: str,
    expected_name: str,
    store: ImageStore,
    busybox_tar: Path,
    tmp_path: Path,
    podman: Podman,
) -> None:
    podman("import", "--change", 'CMD ["/bin/sh"]', str(busybox_tar), "pbb:2")
    podman_id = podman("image", "inspect", "--format", "{{.Id}}", "pbb:2").strip()
    saved = tmp_path / "podman.tar"
    podman("save", "--format", fmt, "-o", str(saved), "pbb:2")
    (loaded,) = load(store, saved)
    assert loaded.id == "sha256:" + podman_id
    assert loaded.names == (expected_name,)
    assert loaded.config.config is not None and loaded.config.config.cmd == ("/bin/sh",)
    (root,) = lowerdirs(store, loaded)
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert store.get("localhost/pbb:2").id == loaded.id


def test_gzipped_docker_archive_loads(store: ImageStore, busybox_tar: Path, tmp_path: Path) -> None:
    import_rootfs(store, busybox_tar, "bb:gz")
    saved = archive_of(store, ["bb:gz"], "docker", tmp_path / "d.tar")
    packed = tmp_path / "d.tar.gz"
    packed.write_bytes(gzip.compress(saved.read_bytes()))
    (loaded,) = load(ImageStore(tmp_path / "other"), packed)
    assert loaded.names == ("bb:gz",)


# -- hostile archives -------------------------------------------------------------------------


def docker_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def docker_image(
    layer: bytes, layer_name: str = "l/layer.tar"
) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        [{"Config": "c.json", "RepoTags": ["evil:1"], "Layers": [layer_name]}]
    ).encode()
    return [member("c.json", config), member(layer_name, layer), member("manifest.json", manifest)]


def test_manifest_pointing_outside_the_archive(store: ImageStore, tmp_path: Path) -> None:
    members = docker_image(b"", "../../../../etc/passwd")
    members = [m for m in members if m[0].name != "../../../../etc/passwd"]
    archive = docker_archive(tmp_path / "a.tar", members)
    with pytest.raises(InvalidImage, match=re.escape('no file "../../../../etc/passwd"')):
        load(store, archive)
    assert store.images() == []


def test_symlinked_member_leading_out_of_the_archive(store: ImageStore, tmp_path: Path) -> None:
    layer = make_tar([file("x", b"1")])
    members = [m for m in docker_image(layer) if m[0].name != "l/layer.tar"]
    link = tarfile.TarInfo("l/layer.tar")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = docker_archive(tmp_path / "a.tar", [*members, (link, None)])
    with pytest.raises(InvalidImage, match="no file"):
        load(store, archive)
    assert store.images() == []


def test_hostile_member_names_create_nothing(store: ImageStore, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    layer = make_tar([file("x", b"1")])
    archive = docker_archive(work / "a.tar", [member("../escaped", b"pwned"), *docker_image(layer)])
    (loaded,) = load(store, archive)
    assert loaded.names == ("evil:1",)
    assert not (tmp_path / "escaped").exists()


def test_hostile_layer_inside_an_archive_records_no_image(
    store: ImageStore, tmp_path: Path
) -> None:
    layer = make_tar([file("../../outside", b"pwned")])
    archive = docker_archive(tmp_path / "a.tar", docker_image(layer))
    with pytest.raises(UnsafeLayer, match="outside"):
        load(store, archive)
    assert store.images() == []
    assert list(store.layers_dir.iterdir()) == []


def test_tampered_oci_blob_is_refused(store: ImageStore, busybox_tar: Path, tmp_path: Path) -> None:
    image = import_rootfs(store, busybox_tar, "bb:1")
    saved = archive_of(store, ["bb:1"], "oci", tmp_path / "o.tar")
    tampered = tmp_path / "t.tar"
    config_member = "blobs/sha256/" + image.id.removeprefix("sha256:")
    with tarfile.open(saved) as source, tarfile.open(tampered, "w") as out:
        for info in source.getmembers():
            data = source.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == config_member:
                data = data.replace(b"amd64", b"arm64")
            out.addfile(info, io.BytesIO(data))
    other = ImageStore(tmp_path / "other")
    with pytest.raises(DigestMismatch, match=image.id):
        load(other, tampered)
    assert other.images() == []
    assert not other.has_blob(image.id)
