"""Docker's copy-up: a new, empty volume mounted over a directory of the image starts with that
directory's content (files, modes, owners, symlinks as links).

The image's layers are merged bottom to top; overlay whiteouts (0/0 character devices) remove
what lower layers had, and opaque directories are not told apart (rare in volume targets).
A target that is missing, not a directory, or reached through a symlink in any layer gives
nothing to copy (symlinks are never followed out of a layer). Blocking: run it in a thread.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def seed_volume(volume_dir: Path, lowerdirs: list[Path], target: str) -> None:
    """Copy the image's `target` directory into the empty `volume_dir` (lowerdirs topmost
    first, as `carte.image.lowerdirs` gives them). Raises OSError on a failed copy."""
    if any(volume_dir.iterdir()):
        return
    parts = [p for p in target.split("/") if p and p != "."]
    if ".." in parts:
        return
    for layer in reversed(lowerdirs):
        source = _inside(layer, parts)
        if source is not None:
            _merge(source, volume_dir)


def _inside(layer: Path, parts: list[str]) -> Path | None:
    """`layer/parts...` when every component is a real directory (no symlink), else None."""
    current = layer
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            return None
    return current


def _is_whiteout(info: os.stat_result) -> bool:
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def _merge(source: Path, dest: Path) -> None:
    for entry in os.scandir(source):
        info = entry.stat(follow_symlinks=False)
        target = dest / entry.name
        if _is_whiteout(info):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            continue
        if stat.S_ISDIR(info.st_mode):
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            target.mkdir(exist_ok=True)
            _merge(Path(entry.path), target)
        elif stat.S_ISLNK(info.st_mode):
            if target.exists() or target.is_symlink():
                target.unlink()
            os.symlink(os.readlink(entry.path), target)
        elif stat.S_ISREG(info.st_mode):
            if target.is_symlink():
                target.unlink()
            shutil.copyfile(entry.path, target, follow_symlinks=False)
        else:
            continue  # devices, fifos and sockets are not copied into volumes
        os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(target, stat.S_IMODE(info.st_mode))
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    source_info = os.lstat(source)
    os.chown(dest, source_info.st_uid, source_info.st_gid)
    os.chmod(dest, stat.S_IMODE(source_info.st_mode))
