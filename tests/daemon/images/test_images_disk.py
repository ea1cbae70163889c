"""Disk use as Docker users read it (issue 15 item 7), through the CLI against a real daemon:
`images` shows layers unpacked, `inspect` adds the compressed size, `system df` counts what
only the build cache keeps as reclaimable, and `image rm` frees the image's layers (blobs,
unpacked layers and the build cache's records of them) instead of leaving them for a prune."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from support.containers import ok
from support.daemon import Daemon

MIB = 1 << 20

DOCKERFILE = """\
FROM busybox AS stage
RUN head -c 1048576 /dev/urandom > /big
FROM busybox
COPY --from=stage /big /big
RUN echo done > /marker
"""


def df(carte: Daemon) -> dict[str, dict[str, Any]]:
    rows = json.loads(ok(carte.client("--format", "json", "system", "df")))
    return {row["type"]: row for row in rows}


def layer_dirs(carte: Daemon) -> set[str]:
    return {p.name for p in (carte.root / "layers").iterdir() if not p.name.startswith(".")}


def test_sizes_build_cache_and_image_rm_free_what_they_say(carte: Daemon, tmp_path: Path) -> None:
    before, layers_before = df(carte), layer_dirs(carte)
    assert before["Build cache"]["size"] == 0, before
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    ok(carte.client("build", "-q", "-t", "disk:1", str(tmp_path), timeout=180))

    (row,) = [
        r
        for r in json.loads(ok(carte.client("--format", "json", "images")))
        if (r["repository"], r["tag"]) == ("disk", "1")
    ]
    (details,) = json.loads(ok(carte.client("image", "inspect", "disk:1")))
    assert details["size"] == row["size"] >= MIB
    assert details["compressed_size"] > 0
    table = ok(carte.client("images", "--filter", "reference=disk"))
    assert "MB" in table.splitlines()[1], table  # the unpacked size, not a few KB

    built = df(carte)
    cache = built["Build cache"]
    assert cache["size"] >= MIB, built  # the first stage's 1 MiB layer: no image keeps it
    assert cache["reclaimable"] == cache["size"], built
    assert built["Images"]["size"] >= before["Images"]["size"] + MIB, built

    assert "Deleted:" in ok(carte.client("image", "rm", "disk:1"))
    after = df(carte)
    assert after["Images"]["size"] == before["Images"]["size"], after
    # The first stage's layer is still cached (as Docker keeps it until builder prune), and
    # counted reclaimable; the final image's own layers and their records went with it.
    assert MIB <= after["Build cache"]["size"] == after["Build cache"]["reclaimable"], after
    ok(carte.client("builder", "prune"))
    assert df(carte)["Build cache"]["size"] == 0
    assert layer_dirs(carte) == layers_before
    for record in (carte.root / "build-cache").glob("*.json"):
        layer = json.loads(record.read_text()).get("layer")
        if layer:
            digest = layer["descriptor"]["digest"].removeprefix("sha256:")
            assert (carte.root / "blobs" / "sha256" / digest).is_file(), record


def test_builder_prune_until_takes_only_older_cache(carte: Daemon, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    ok(carte.client("build", "-q", "-t", "until:1", str(tmp_path), timeout=180))
    cached = df(carte)["Build cache"]["size"]
    assert cached >= MIB

    assert "records: 0" in ok(carte.client("builder", "prune", "--filter", "until=1h"))
    assert df(carte)["Build cache"]["size"] == cached  # younger than an hour: kept
    two_hours_ago = time.time() - 7200
    for record in (carte.root / "build-cache").glob("*.json"):
        os.utime(record, (two_hours_ago, two_hours_ago))
    ok(carte.client("builder", "prune", "--filter", "until=1h"))
    assert df(carte)["Build cache"]["size"] == 0
    listed = ok(carte.client("run", "--rm", "until:1", "ls", "/big", "/marker")).split()
    assert listed == ["/big", "/marker"]  # the image keeps its own layers

    bad = carte.client("builder", "prune", "--filter", "label=x")
    assert bad.returncode != 0 and "until=" in bad.stderr and "Traceback" not in bad.stderr
    ok(carte.client("image", "rm", "until:1"))
