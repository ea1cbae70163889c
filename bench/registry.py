"""`carte push` / `carte pull` against `skopeo copy` on one ~100 MB image and one local registry.

    .venv/bin/python bench/registry.py [--runs 3] [--layers 4] [--layer-mb 25]

Starts Debian's docker-registry on a free loopback port (own config and storage) and a private
Carte daemon, writes an OCI layout of LAYERS incompressible layers (plus busybox), loads it
into Carte, then times, interleaved, RUNS times each (wall-clock seconds of the client command):
  push   skopeo copy oci:LAYOUT -> docker://REG/skopeo/big   vs  carte push REG/carte/big
         (a fresh registry every run, so every blob is sent by both)
  pull   skopeo copy docker://REG/... -> a fresh oci: directory  vs  carte pull REG/... into a
         store holding none of its blobs (the image removed and garbage-collected first);
         Carte's pull also unpacks the layers so the image can run; skopeo only stores blobs.
Target: pull <= 1.2x skopeo. Everything it started or made is stopped and removed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from busybox_rootfs import make_rootfs_tar  # noqa: E402

CARTE = [sys.executable, "-m", "carte"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit("docker-registry exited at start") from None
            time.sleep(0.05)
    raise SystemExit("docker-registry did not start")


def start_registry(base: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A fresh docker-registry (empty storage under `base`) on a free loopback port."""
    port = free_port()
    base.mkdir(parents=True)
    (base / "registry.yml").write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(base / "registry.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, process)
    return f"127.0.0.1:{port}", process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def blob(layout: Path, data: bytes, media_type: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def layer_tar(name: str, size: int) -> bytes:
    path = Path(tempfile.mkstemp(prefix="bench-layer-")[1])
    try:
        with tarfile.open(path, "w") as tar:
            data = path.with_suffix(".data")
            data.write_bytes(os.urandom(size))
            tar.add(data, arcname=name)
            data.unlink()
        return path.read_bytes()
    finally:
        path.unlink()


def write_layout(layout: Path, base_tar: Path, layers: int, layer_mb: int) -> int:
    """An OCI layout tagged `big`; returns its total compressed size."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    raws = [base_tar.read_bytes()]
    raws += [layer_tar(f"data{n}.bin", layer_mb << 20) for n in range(layers)]
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    descriptors = [blob(layout, gzip.compress(raw, compresslevel=1, mtime=0), gz) for raw in raws]
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
            "config": blob(layout, config, "application/vnd.oci.image.config.v1+json"),
            "layers": descriptors,
        }
    ).encode()
    top = blob(layout, manifest, "application/vnd.oci.image.manifest.v1+json")
    top["annotations"] = {"org.opencontainers.image.ref.name": "big"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return sum(int(str(d["size"])) for d in descriptors)


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    run(argv, env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mb", type=int, default=25)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="carte-bench-reg-", dir="/tmp"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sock = work / "carte.sock"
        daemon_log = (work / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [*CARTE, "daemon", "--root", str(work / "root"), "--run-root", str(work / "run"),
             "--socket", str(sock)],
            stdout=daemon_log, stderr=daemon_log,
        )  # fmt: skip
        processes.append(daemon)
        env = {**os.environ, "CARTE_HOST": f"unix://{sock}", "XDG_CONFIG_HOME": str(work / "cfg")}
        deadline = time.monotonic() + 30
        while subprocess.run([*CARTE, "info"], env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"carte daemon did not start: {work / 'daemon.log'}")
            time.sleep(0.1)

        base = make_rootfs_tar(work / "busybox.tar", work)
        layout = work / "layout"
        total = write_layout(layout, base, args.layers, args.layer_mb)
        archive = work / "layout.tar"
        with tarfile.open(archive, "w") as tar:
            for item in sorted(layout.iterdir()):
                tar.add(item, arcname=item.name)
        local = json.loads(run([*CARTE, "--format", "json", "load", "-i", str(archive)], env))
        image_id = local[0]["id"]

        results: dict[str, list[float]] = {}
        for n in range(args.runs):
            # A fresh registry per run: no blob is there yet and nothing can be mounted.
            host, registry = start_registry(work / f"registry-{n}")
            processes.append(registry)
            skopeo_ref = f"docker://{host}/skopeo/big:1"
            carte_ref = f"{host}/carte/big:1"
            fresh = work / f"pulled-{n}"
            push_skopeo = ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:big"]
            pull_skopeo = ["skopeo", "copy", "-q", "--src-tls-verify=false", skopeo_ref]
            run([*CARTE, "tag", image_id, carte_ref], env)
            steps = [
                ("skopeo push", [*push_skopeo, skopeo_ref]),
                ("carte push", [*CARTE, "push", "-q", carte_ref]),
                ("skopeo pull", [*pull_skopeo, f"oci:{fresh}:big"]),
                ("carte pull", [*CARTE, "pull", "-q", carte_ref]),
            ]
            for label, argv in steps:
                if label == "carte pull":  # into a store holding none of the image's blobs
                    ids = {row["id"] for row in json.loads(run([*CARTE, "--format", "json",
                                                                 "images"], env))}  # fmt: skip
                    for stored in ids:
                        run([*CARTE, "rmi", "-f", stored], env)
                    run([*CARTE, "image", "prune", "-a"], env)
                results.setdefault(label, []).append(timed(argv, env))
            shutil.rmtree(fresh)
            stop(registry)

        print(f"image: {args.layers} x {args.layer_mb} MB layers + busybox, "
              f"{total / 1e6:.1f} MB compressed; {args.runs} runs, medians (min)")  # fmt: skip
        for what in ("push", "pull"):
            ours = statistics.median(results[f"carte {what}"])
            theirs = statistics.median(results[f"skopeo {what}"])
            print(
                f"{what}:  carte {ours:6.2f} s (min {min(results[f'carte {what}']):.2f})   "
                f"skopeo {theirs:6.2f} s (min {min(results[f'skopeo {what}']):.2f})   "
                f"ratio {ours / theirs:.2f}x"
            )
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
