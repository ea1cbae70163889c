"""The registry client against Debian's docker-registry on loopback, checked with skopeo."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_tars import chardev, file, make_image, make_tar
from support.registry import RunningRegistry, start_private_registry, start_registry

from carte.image import oci
from carte.image.auth import Credentials, CredentialStore, parse_challenge
from carte.image.errors import DigestMismatch, ImageNotFound, UnsafeLayer
from carte.image.importer import import_rootfs
from carte.image.layers import lowerdirs
from carte.image.reference import parse_reference
from carte.image.registry import Progress, Registry, RegistryUnauthorized
from carte.image.store import ImageStore, StoredImage


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("registry") / "open", None)


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_private_registry(tmp_path_factory.mktemp("registry-auth"), "carte", "s3cret")


@pytest.fixture
def credentials(tmp_path: Path) -> CredentialStore:
    return CredentialStore(tmp_path / "config" / "carte" / "auth.json")


def skopeo(*args: str) -> str:
    return subprocess.run(
        ["skopeo", *args], check=True, capture_output=True, text=True, timeout=120
    ).stdout


def big_image(store: ImageStore, name: str) -> StoredImage:
    """An image whose layer spans several reads and upload chunks (incompressible content)."""
    return make_image(store, [make_tar([file("random", os.urandom(3 << 20))])], name)


def test_push_is_what_skopeo_reads_and_pull_round_trips(
    store: ImageStore, busybox_tar: Path, registry: RunningRegistry, credentials: CredentialStore
) -> None:
    image = import_rootfs(store, busybox_tar, "bb:1")
    client = Registry(registry.host, credentials=credentials)
    digest = client.push(store, image, parse_reference(f"{registry.host}/carte/bb:1"))
    inspected = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/carte/bb:1")
    )
    assert inspected["Digest"] == digest == image.manifest_digest
    assert inspected["Layers"] == [image.manifest.layers[0].digest]
    fresh = ImageStore(store.root.parent / "fresh")
    pulled = client.pull(fresh, parse_reference(f"{registry.host}/carte/bb:1"))
    assert pulled.id == image.id
    assert pulled.names == (f"{registry.host}/carte/bb:1",)
    assert (lowerdirs(fresh, pulled)[0] / "bin/busybox").exists()


def test_chunked_upload_head_skip_and_cross_repo_mount(
    store: ImageStore, registry: RunningRegistry, credentials: CredentialStore, tmp_path: Path
) -> None:
    image = big_image(store, "big:1")
    client = Registry(registry.host, credentials=credentials, chunk_size=1 << 20)
    events: list[Progress] = []
    client.push(store, image, parse_reference(f"{registry.host}/chunks/big:1"), events.append)
    layer = image.manifest.layers[0].digest
    chunk_reports = [e.done for e in events if e.digest == layer and e.action == "push"]
    assert len(chunk_reports) >= 3  # the layer went up in several PATCH requests
    events.clear()
    client.push(store, image, parse_reference(f"{registry.host}/chunks/big:1"), events.append)
    assert {e.action for e in events} == {"exists"}
    events.clear()
    client.push(store, image, parse_reference(f"{registry.host}/mounted/big:1"), events.append)
    assert {e.action for e in events} == {"mounted"}
    out = tmp_path / "copy"
    skopeo(
        "copy", "--src-tls-verify=false", f"docker://{registry.host}/mounted/big:1", f"dir:{out}"
    )
    assert (out / layer.removeprefix("sha256:")).read_bytes() == store.read_blob(layer)


def test_pull_what_skopeo_pushed_in_docker_schema2(
    store: ImageStore, busybox_tar: Path, registry: RunningRegistry, credentials: CredentialStore
) -> None:
    source = ImageStore(store.root.parent / "source")
    image = import_rootfs(source, busybox_tar, "bb:1")
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        f"oci:{source.root}:bb:1",
        f"docker://{registry.host}/from-skopeo/bb:v2s2",
    )
    client = Registry(registry.host, credentials=credentials)
    pulled = client.pull(store, parse_reference(f"{registry.host}/from-skopeo/bb:v2s2"))
    assert pulled.manifest_descriptor.media_type == oci.DOCKER_MANIFEST
    assert pulled.diff_ids == image.diff_ids
    assert (lowerdirs(store, pulled)[0] / "bin/busybox").exists()


def test_index_pull_picks_linux_amd64(
    store: ImageStore, registry: RunningRegistry, credentials: CredentialStore
) -> None:
    client = Registry(registry.host, credentials=credentials)
    amd64 = make_image(store, [make_tar([file("arch", b"amd64")])], "multi:amd64")
    other = make_image(store, [make_tar([file("arch", b"arm64")])], "multi:arm64")
    for image, tag in ((amd64, "amd64"), (other, "arm64")):
        client.push(store, image, parse_reference(f"{registry.host}/multi/app:{tag}"))
    index = oci.Index(
        schema_version=2,
        media_type=oci.OCI_INDEX,
        manifests=(
            msgspec_replace(other, "arm64"),
            msgspec_replace(amd64, "amd64"),
        ),
    )
    client.request(
        "PUT",
        "/v2/multi/app/manifests/latest",
        scope="repository:multi/app:pull,push",
        headers={"Content-Type": oci.OCI_INDEX},
        body=oci.encode(index),
        ok=(201,),
    ).read()
    fresh = ImageStore(store.root.parent / "fresh")
    pulled = client.pull(fresh, parse_reference(f"{registry.host}/multi/app"))
    assert pulled.id == amd64.id
    assert (lowerdirs(fresh, pulled)[0] / "arch").read_bytes() == b"amd64"


def msgspec_replace(image: StoredImage, architecture: str) -> oci.Descriptor:
    return oci.Descriptor(
        media_type=image.manifest_descriptor.media_type,
        digest=image.manifest_digest,
        size=image.manifest_descriptor.size,
        platform=oci.Platform(architecture=architecture, os="linux"),
    )


def test_interrupted_pull_leaves_nothing_partial_and_next_pull_completes(
    store: ImageStore, registry: RunningRegistry, credentials: CredentialStore
) -> None:
    source = ImageStore(store.root.parent / "source")
    image = big_image(source, "big:1")
    client = Registry(registry.host, credentials=credentials)
    reference = parse_reference(f"{registry.host}/interrupt/big:1")
    client.push(source, image, reference)
    layer = image.manifest.layers[0].digest

    def cut_off(event: Progress) -> None:
        if event.digest == layer and 0 < event.done < event.total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.pull(store, reference, cut_off)
    assert not store.has_blob(layer)
    assert [p.name for p in store.ingest_dir.iterdir()] == ["gc.lock"]
    assert store.images() == []
    pulled = client.pull(store, reference)
    assert pulled.id == image.id and store.has_blob(layer)


def test_corrupted_registry_content_is_refused(
    store: ImageStore, registry: RunningRegistry, credentials: CredentialStore
) -> None:
    source = ImageStore(store.root.parent / "source")
    image = make_image(source, [make_tar([file("x", b"original")])], "c:1")
    client = Registry(registry.host, credentials=credentials)
    reference = parse_reference(f"{registry.host}/corrupt/c:1")
    client.push(source, image, reference)
    layer = image.manifest.layers[0].digest.removeprefix("sha256:")
    data = registry.storage / "docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    with pytest.raises(DigestMismatch, match="nothing was stored"):
        client.pull(store, reference)
    assert store.images() == [] and not store.has_blob("sha256:" + layer)


def test_unknown_image_is_one_line(
    store: ImageStore, registry: RunningRegistry, credentials: CredentialStore
) -> None:
    client = Registry(registry.host, credentials=credentials)
    expected = f'"{registry.host}/nothing/here:latest" not found in registry'
    with pytest.raises(ImageNotFound, match=re.escape(expected)):
        client.pull(store, parse_reference(f"{registry.host}/nothing/here"))


def test_basic_auth_login_and_refusal(
    store: ImageStore,
    busybox_tar: Path,
    private_registry: RunningRegistry,
    credentials: CredentialStore,
) -> None:
    image = import_rootfs(store, busybox_tar, "bb:1")
    reference = parse_reference(f"{private_registry.host}/secret/bb:1")
    anonymous = Registry(private_registry.host, credentials=credentials)
    with pytest.raises(RegistryUnauthorized, match=f"run carte login {private_registry.host}"):
        anonymous.push(store, image, reference)
    credentials.save(private_registry.host, Credentials(username="carte", password="s3cret"))
    assert stat.S_IMODE(credentials.path.stat().st_mode) == 0o600
    client = Registry(private_registry.host, credentials=credentials)
    client.ping()
    client.push(store, image, reference)
    inspected = json.loads(
        skopeo(
            "inspect",
            "--tls-verify=false",
            "--creds",
            "carte:s3cret",
            f"docker://{private_registry.host}/secret/bb:1",
        )
    )
    assert inspected["Digest"] == image.manifest_digest
    credentials.save(private_registry.host, Credentials(username="carte", password="wrong"))
    with pytest.raises(RegistryUnauthorized):
        Registry(private_registry.host, credentials=credentials).ping()
    assert credentials.remove(private_registry.host)
    assert credentials.get(private_registry.host) is None


def test_plain_http_only_for_loopback_or_insecure_hosts() -> None:
    assert Registry("127.0.0.1:5000").scheme == "http"
    assert Registry("localhost:5000").scheme == "http"
    assert Registry("registry.example:5000").scheme == "https"
    assert Registry("registry.example:5000", insecure=["registry.example:5000"]).scheme == "http"
    assert Registry("docker.io").api_host == "registry-1.docker.io"


def test_www_authenticate_parsing() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="r"').params == {"realm": "r"}


def test_pulled_device_nodes_are_refused_now_or_at_first_use(
    store: ImageStore, registry: RunningRegistry, credentials: CredentialStore
) -> None:
    source = ImageStore(store.root.parent / "source")
    hostile = make_image(source, [make_tar([chardev("dev/mem", 1, 1)])], "dev:1")
    client = Registry(registry.host, credentials=credentials)
    reference = parse_reference(f"{registry.host}/hostile/dev:1")
    client.push(source, hostile, reference)
    with pytest.raises(UnsafeLayer, match='"dev/mem" is a device node'):
        client.pull(store, reference)
    assert store.images() == []
    lazy = client.pull(store, reference, unpack=False)
    with pytest.raises(UnsafeLayer, match='"dev/mem"'):
        lowerdirs(store, lazy)
    assert list(store.layers_dir.iterdir()) == []
