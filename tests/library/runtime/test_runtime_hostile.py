"""A hostile image cannot use symlinks to send a mount or a write outside its root."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from runtime_harness import Bundle, Runtime, host_mounts_mentioning


def test_symlinked_mount_destinations_stay_inside_the_root(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    """/proc, /dev/shm and a bind destination are symlinks to host directories (absolute and
    via ".."); every mount lands inside the image and the host directories stay untouched."""
    host_proc, host_shm, host_data = (tmp_path / name for name in ("hproc", "hshm", "hdata"))
    for directory in (host_proc, host_shm, host_data):
        directory.mkdir()
    source = tmp_path / "volume"
    source.mkdir()
    (source / "payload").write_text("volume")
    bundle = make_bundle(shell="echo pwned > /data/escaped; echo ok")
    root = bundle.rootfs
    os.rmdir(root / "proc")
    os.symlink(str(host_proc), root / "proc")
    (root / "dev").rmdir()
    (root / "dev").mkdir()
    os.symlink("../../../../../../../../" + str(host_shm).lstrip("/"), root / "dev/shm")
    os.symlink(str(host_data), root / "data")
    bundle.config["mounts"].append(
        {"destination": "/data", "type": "bind", "source": str(source), "options": ["rbind"]}
    )
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    for directory in (host_proc, host_shm, host_data):
        assert list(directory.iterdir()) == [], f"{directory} was written from the container"
        assert host_mounts_mentioning(str(directory)) == []
    # The bind mount went to the in-root path the symlink names, and writes reached the volume.
    assert (source / "escaped").read_text() == "pwned\n"
    assert (root / str(host_data).lstrip("/")).is_dir()


def test_symlinked_cwd_and_masked_path_stay_inside(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    host_dir = tmp_path / "hostwork"
    host_dir.mkdir()
    bundle = make_bundle(shell="pwd; echo x > here")
    os.symlink(str(host_dir), bundle.rootfs / "work")
    bundle.config["process"]["cwd"] = "/work/sub"
    bundle.config["linux"]["maskedPaths"].append("/work")
    result = runtime.run(bundle)
    assert list(host_dir.iterdir()) == []
    assert host_mounts_mentioning(str(host_dir)) == []
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(host_dir / "sub")  # the path inside the root
    inside = bundle.rootfs / str(host_dir).lstrip("/") / "sub" / "here"
    assert inside.read_text() == "x\n"
