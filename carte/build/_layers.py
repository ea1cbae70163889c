"""Make a build step's upper directory the unpacked layer itself, instead of unpacking the
layer blob just written from it (saves a decompression and an extraction per step).

The upper dir is already in the layer cache's form (whiteouts as 0/0 devices, opaque dirs
as the `trusted.overlay.opaque` xattr). What the blob does not carry is removed or aligned
first, so the directory matches its blob: overlayfs's own bookkeeping xattrs, sockets (the
tar skips them) and, with a SOURCE_DATE_EPOCH, mtimes newer than it (the tar clamps them).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from carte.image.layers import UNPACK_PREFIX, is_unpacked, publish_layer
from carte.image.store import ImageStore
from carte.image.tarsafe import OPAQUE_XATTR

_OVERLAY_XATTRS = "trusted.overlay."


def adopt_as_layer(
    store: ImageStore, upper: Path, chain_id: str, diff_id: str, source_date_epoch: int | None
) -> None:
    """Move `upper` into the layer cache under `chain_id` (unless that layer exists already).

    Raises `OSError`; on failure the cache is unchanged (the caller removes `upper`). Holds
    `store.writing()` throughout: garbage collection removes `.unpack-*` directories and
    layers no image names, which this one is until its image is stored.
    """
    with store.writing():
        if is_unpacked(store, chain_id):
            return
        _align(upper, source_date_epoch)
        temp = Path(tempfile.mkdtemp(dir=store.layers_dir, prefix=UNPACK_PREFIX))
        try:
            os.rename(upper, temp / "diff")
            publish_layer(store, temp, chain_id, diff_id)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)


def _align(upper: Path, epoch: int | None) -> None:
    for directory, subdirs, files in os.walk(upper):
        for name in [*subdirs, *files]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(path)
                continue
            if not stat.S_ISLNK(st.st_mode):
                for key in os.listxattr(path, follow_symlinks=False):
                    if key.startswith(_OVERLAY_XATTRS) and key != OPAQUE_XATTR:
                        os.removexattr(path, key, follow_symlinks=False)
            if epoch is not None and st.st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
