"""`carte push` / `carte pull` of a 3-layer image against `skopeo copy`, one local registry.

An OCI layout of busybox plus two incompressible layers (LAYER_MB each) is loaded into Carte;
then, each round, a fresh docker-registry (so every blob is sent by both) and:
  push   skopeo copy oci:LAYOUT -> docker://REG/skopeo/img   vs  carte push REG/carte/img
  pull   carte pull REG/carte/img into a store holding none of its blobs (the image removed
         and garbage-collected first) against skopeo copy docker://REG/... -> a fresh oci:
         directory, measured both ways: skopeo alone (blobs only), and skopeo plus unpacking
         the layers with tar (what Carte's pull also does, so the image can run).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

from bench.peers import ENV, Peers, run, timed
from bench.results import Result, interleave, median

NAME = "registry"
DEFAULT_RUNS = 3
LAYER_MB = 20


def _blob(layout: Path, data: bytes, media_type: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _layer_tar(directory: Path, name: str, size: int) -> bytes:
    data = directory / name
    data.write_bytes(os.urandom(size))
    archive = directory / f"{name}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(data, arcname=name)
    data.unlink()
    raw = archive.read_bytes()
    archive.unlink()
    return raw


def write_layout(layout: Path, base_tar: Path, layer_mb: int) -> int:
    """An OCI layout of 3 layers tagged `img`; returns its compressed size in bytes."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    raws = [base_tar.read_bytes()]
    raws += [_layer_tar(layout.parent, f"data{n}.bin", layer_mb << 20) for n in range(2)]
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    layers = [_blob(layout, gzip.compress(raw, compresslevel=1, mtime=0), gz) for raw in raws]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in raws],
            },
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": _blob(layout, config, "application/vnd.oci.image.config.v1+json"),
            "layers": layers,
        }
    ).encode()
    top = _blob(layout, manifest, "application/vnd.oci.image.manifest.v1+json")
    top["annotations"] = {"org.opencontainers.image.ref.name": "img"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return sum(int(str(layer["size"])) for layer in layers)


def _unpack(layout: Path, into: Path) -> None:
    """Extract the layers of the layout's image in order (what a runnable pull needs)."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    into.mkdir()
    for layer in manifest["layers"]:
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
        run(["tar", "-xzf", str(blob), "-C", str(into)])


def measure(peers: Peers, runs: int) -> list[Result]:
    carte = peers.carte()
    env = {**ENV, "XDG_CONFIG_HOME": str(peers.work / "cfg")}
    layout = peers.work / "layout"
    total = write_layout(layout, peers.busybox_tar(), LAYER_MB)
    archive = peers.work / "layout.tar"
    with tarfile.open(archive, "w") as tar:
        for item in sorted(layout.iterdir()):
            tar.add(item, arcname=item.name)
    image_id = json.loads(run([*carte, "--format", "json", "load", "-i", str(archive)], env))[0][
        "id"
    ]
    state: dict[str, str] = {}
    counter = iter(range(10**6))

    def fresh_registry(populate: bool) -> None:
        """A new, empty registry; with the image pushed by both when `populate`."""
        peers.stop_registries()
        host = peers.registry()
        state["host"] = host
        if not populate:
            return
        run([*carte, "tag", image_id, f"{host}/carte/img:1"], env)
        run([*carte, "push", "-q", f"{host}/carte/img:1"], env)
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:img",
             f"docker://{host}/skopeo/img:1"], env)  # fmt: skip

    def empty_store() -> None:
        rows = json.loads(run([*carte, "--format", "json", "images"], env))
        for stored in {row["id"] for row in rows}:
            run([*carte, "rmi", "-f", stored], env)
        run([*carte, "image", "prune", "-a"], env)

    def carte_push() -> float:
        fresh_registry(populate=False)
        reference = f"{state['host']}/carte/img:1"
        run([*carte, "tag", image_id, reference], env)
        return timed([*carte, "push", "-q", reference], env)

    def skopeo_push() -> float:
        fresh_registry(populate=False)
        return timed(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:img",
                      f"docker://{state['host']}/skopeo/img:1"], env)  # fmt: skip

    def carte_pull() -> float:
        empty_store()
        return timed([*carte, "pull", "-q", f"{state['host']}/carte/img:1"], env)

    def skopeo_pull(unpack: bool) -> float:
        target = peers.work / f"pulled-{next(counter)}"
        started = time.perf_counter()
        run(["skopeo", "copy", "-q", "--src-tls-verify=false",
             f"docker://{state['host']}/skopeo/img:1", f"oci:{target}:img"], env)  # fmt: skip
        if unpack:
            _unpack(target, peers.work / f"{target.name}-rootfs")
        elapsed = time.perf_counter() - started
        shutil.rmtree(target)
        shutil.rmtree(peers.work / f"{target.name}-rootfs", ignore_errors=True)
        return elapsed

    pushes = interleave({"carte push": carte_push, "skopeo push": skopeo_push}, runs, warm=0)
    fresh_registry(populate=True)
    pulls = interleave(
        {
            "carte pull": carte_pull,
            "skopeo pull": lambda: skopeo_pull(False),
            "skopeo pull + unpack": lambda: skopeo_pull(True),
        },
        runs,
        warm=0,
    )
    size = f"3 layers, {total / 1e6:.0f} MB compressed"
    ours = median(pulls["carte pull"])
    return [
        Result.of_medians(NAME, f"pull ({size}) vs skopeo to an OCI layout + tar unpack", pulls,
                          "carte pull", "skopeo pull + unpack", "skopeo + unpack", limit=1.0,
                          runs=runs),
        Result(NAME, "pull vs skopeo to an OCI layout alone (no unpack)", ours, "s",
               median(pulls["skopeo pull"]), "skopeo", limit=1.0, runs=runs),
        Result.of_medians(NAME, "push vs skopeo from an OCI layout", pushes, "carte push",
                          "skopeo push", "skopeo", limit=1.0, runs=runs),
    ]  # fmt: skip
