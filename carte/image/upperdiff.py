"""Turn an overlay upper directory into a layer tar (for `build`, `commit`): the reverse of
unpacking. Whiteout devices become `.wh.NAME` files and opaque directories get a
`.wh..wh..opq` entry. Only the upper dir is walked, never the merged tree. Entries are sorted
and, with a `source_date_epoch`, mtimes are clamped to it, so equal trees give equal bytes.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from carte.image.tarsafe import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX

_SKIPPED_XATTR_PREFIX = "trusted.overlay."


def diff_from_upper(upper: Path, out: BinaryIO, *, source_date_epoch: int | None = None) -> None:
    """Write the tar of `upper`'s changes to `out`.

    Raises `OSError` if the tree cannot be read (the caller discards the partial output).
    Sockets are skipped, as Docker does; hard links within the tree stay hard links.
    """
    writer = _DiffWriter(out, source_date_epoch)
    try:
        writer.add_children(str(upper), "")
    finally:
        writer.close()


class _DiffWriter:
    def __init__(self, out: BinaryIO, source_date_epoch: int | None) -> None:
        self._archive = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        self._epoch = source_date_epoch
        self._links: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        self._archive.close()

    def add_children(self, directory: str, prefix: str) -> None:
        for name in sorted(os.listdir(directory)):
            self._add(os.path.join(directory, name), prefix + name)

    def _add(self, path: str, name: str) -> None:
        st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            head, _, base = name.rpartition("/")
            whiteout = self._info(f"{head}/{WHITEOUT_PREFIX}{base}".lstrip("/"), st)
            whiteout.mode = 0o600
            self._archive.addfile(whiteout)
            return
        if stat.S_ISSOCK(mode):
            return
        info = self._info(name, st)
        if not stat.S_ISLNK(mode):
            self._add_xattrs(info, path)
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            self._archive.addfile(info)
            if _is_opaque(path):
                marker = self._info(f"{name}/{OPAQUE_MARKER}", st)
                marker.mode, marker.pax_headers = 0o600, {}
                self._archive.addfile(marker)
            self.add_children(path, name + "/")
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            self._archive.addfile(info)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                info.type, info.linkname = tarfile.LNKTYPE, self._links[key]
                self._archive.addfile(info)
                return
            self._links[key] = name
            info.size = st.st_size
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as data:
                self._archive.addfile(info, data)
        else:
            info.type = (
                tarfile.CHRTYPE
                if stat.S_ISCHR(mode)
                else tarfile.BLKTYPE
                if stat.S_ISBLK(mode)
                else tarfile.FIFOTYPE
            )
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._archive.addfile(info)

    def _info(self, name: str, st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        mtime = int(st.st_mtime)
        info.mtime = min(mtime, self._epoch) if self._epoch is not None else mtime
        return info

    def _add_xattrs(self, info: tarfile.TarInfo, path: str) -> None:
        headers: dict[str, str] = {}
        for key in sorted(os.listxattr(path, follow_symlinks=False)):
            if key.startswith(_SKIPPED_XATTR_PREFIX):
                continue
            value = os.getxattr(path, key, follow_symlinks=False)
            headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
        info.pax_headers = headers


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
