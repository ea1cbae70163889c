"""A real daemon keeps layers' holes and counts real disk use in `system df`, and a start
removes what a daemon killed mid-unpack left (issue 11, item 10)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.containers import ok
from support.daemon import DaemonFactory

MIB = 1 << 20


def sparse_rootfs_tar(tmp_path: Path) -> Path:
    """A 10 KB tar (GNU sparse format) of a rootfs holding a 1 GiB sparse file."""
    tree = tmp_path / "tree"
    (tree / "data").mkdir(parents=True)
    with open(tree / "data" / "disk.img", "wb") as out:
        out.truncate(1 << 30)
        out.write(b"boot sector")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-cf", str(archive), "-C", str(tree), "."],
        check=True,
    )
    assert archive.stat().st_size < 20_000
    return archive


def test_a_start_removes_half_unpacked_layers_and_df_counts_real_use(
    daemons: DaemonFactory, tmp_path: Path
) -> None:
    carte = daemons(start=False)
    half = carte.root / "layers" / ".unpack-k1ll3d"
    (half / "diff" / "etc").mkdir(parents=True)
    (half / "diff" / "etc" / "shadow").write_text("root:x:::::::\n")
    (carte.root / "ingest").mkdir()
    (carte.root / "ingest" / "blob-k1ll3d").write_bytes(b"partial")
    carte.start()
    assert not half.exists()
    assert not (carte.root / "ingest" / "blob-k1ll3d").exists()

    ok(carte.client("import", str(sparse_rootfs_tar(tmp_path)), "sparse:1"))
    rows = {
        row["type"]: row for row in json.loads(ok(carte.client("--format", "json", "system", "df")))
    }
    assert rows["Images"]["size"] < 2 * MIB, rows  # blobs and unpacked layers, holes kept
    assert rows["Build cache"]["size"] == 0, rows
