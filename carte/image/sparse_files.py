"""Writing a layer entry's data so that holes stay holes.

A tar member's data is copied into a new file with `pwrite` at its offsets; blocks that are
all zeros are skipped and the file is truncated to its size at the end, so they read back as
zeros while taking no disk space. A GNU sparse member (old GNU, PAX 0.x and 1.0 formats, as
`tarfile` decodes them into `TarInfo.sparse`) carries only its data regions, which are placed
at their offsets: a 10 KB tar of a 1 GB sparse file stays about 10 KB on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

_CHUNK = 1 << 20
_BLOCK = 64 << 10
"""Granularity of zero detection: a hole is made for every all-zero block of this size."""
_ZEROS = bytes(_BLOCK)


class ShortData(Exception):
    """The stream ended before the member's data did."""


def write_regions(fd: int, stream: BinaryIO, regions: Sequence[tuple[int, int]], size: int) -> None:
    """Copy each (offset, length) region's bytes, read in order from `stream`, into `fd` at
    its offset, leaving holes for all-zero blocks; the file ends up `size` bytes long.

    A plain member is the single region ``[(0, size)]``. Raises `ShortData` when `stream` ends
    early and `OSError` from the writes; the caller removes the file on failure.
    """
    end = 0  # of the data written so far: the file's length
    for offset, length in regions:
        position, remaining = offset, length
        while remaining:
            data = stream.read(min(_CHUNK, remaining))
            if not data:
                raise ShortData
            end = max(end, _write_nonzero(fd, data, position))
            position += len(data)
            remaining -= len(data)
    if end != size:  # a trailing hole (or an empty file): one journaled inode change less
        os.ftruncate(fd, size)


def _write_nonzero(fd: int, data: bytes, position: int) -> int:
    """Write `data`'s non-zero blocks at `position`; the end of the last one written (0 if
    none was)."""
    start = None  # first byte of the current run of data blocks
    end = 0
    for block in range(0, len(data), _BLOCK):
        piece = data[block : block + _BLOCK]  # bytes == bytes is a memcmp; memoryview's is not
        zero = piece == _ZEROS[: len(piece)]
        if zero and start is not None:
            _pwrite_all(fd, memoryview(data)[start:block], position + start)
            start, end = None, position + block
        elif not zero and start is None:
            start = block
    if start is not None:
        _pwrite_all(fd, memoryview(data)[start:], position + start)
        end = position + len(data)
    return end


def _pwrite_all(fd: int, data: memoryview, position: int) -> None:
    while data:
        written = os.pwrite(fd, data, position)
        data, position = data[written:], position + written
