"""Independent peers for the image tests: an OCI layout written by hand (not by Carte's code),
skopeo, podman with its own storage, and a tiny registry double that can break a blob."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

# The one account of the registry with htpasswd auth.
USER, PASSWORD = "carte", "s3cret"


def skopeo(*args: str) -> str:
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def image_parts(rootfs_tar: Path, cmd: list[str], level: int = 9) -> tuple[bytes, bytes, bytes]:
    """(gzip layer, config, manifest) of a one-layer image, built with hashlib and json only;
    `level` changes the layer's digest (not its content)."""
    raw = rootfs_tar.read_bytes()
    layer = gzip.compress(raw, compresslevel=level, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin:/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return layer, config, manifest


def write_oci_layout(layout: Path, rootfs_tar: Path, tag: str, cmd: list[str]) -> None:
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layer, config, manifest = image_parts(rootfs_tar, cmd)
    _blob(layout, layer)
    _blob(layout, config)
    descriptor = _blob(layout, manifest)
    descriptor["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))


class BreakableRegistry:
    """A registry double serving one image whose layer can be cut short or corrupted.

    Debian's docker-registry cannot be made to drop a transfer at a chosen byte on demand, so
    this serves the distribution API's GET paths only (manifest, blobs) from memory."""

    def __init__(self, rootfs_tar: Path, address: str = "127.0.0.1") -> None:
        self.layer, self.config, self.manifest = image_parts(rootfs_tar, ["/bin/sh"], level=1)
        self.mode = "ok"  # "truncate" | "corrupt" | "ok"
        self.blob_requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                outer.serve(self)

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.host = f"{address}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        digests = {
            "sha256:" + hashlib.sha256(data).hexdigest(): data
            for data in (self.layer, self.config, self.manifest)
        }
        path = handler.path
        body: bytes | None = None
        content_type = "application/octet-stream"
        if path == "/v2/":
            body = b"{}"
        elif path.startswith("/v2/broken/bb/manifests/"):
            body, content_type = self.manifest, "application/vnd.oci.image.manifest.v1+json"
        elif path.startswith("/v2/broken/bb/blobs/"):
            body = digests.get(path.rsplit("/", 1)[1])
        if body is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        is_layer = body is self.layer
        if is_layer:
            self.blob_requests += 1
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command == "HEAD":
            return
        if is_layer and self.mode == "truncate":
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if is_layer and self.mode == "corrupt":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        handler.wfile.write(body)

    def __enter__(self) -> BreakableRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
