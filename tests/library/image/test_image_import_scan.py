"""The import's scan for device nodes under /dev reads a plain tar header to header; it must
find exactly what tarfile finds, in every header form (ustar prefix, pax, GNU long names)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from carte.image.importer import _collect, _walk_headers

LONG = "dev/" + "d" * 150


def device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


@pytest.mark.parametrize("form", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_header_walk_finds_what_tarfile_finds(tmp_path: Path, form: int) -> None:
    path = tmp_path / "root.tar"
    with tarfile.open(path, "w", format=form) as archive:
        archive.addfile(tarfile.TarInfo("./etc"), None)
        for name in ("./dev/null", "dev/" + "p" * 90 + "/" + "n" * 60, "./srv/dev/zero"):
            archive.addfile(device(name))
        if form != tarfile.USTAR_FORMAT:
            archive.addfile(device(LONG))
        data = b"x" * 1000
        info = tarfile.TarInfo("./etc/é-file")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    expected: list[tuple[int, int, str]] = []
    with tarfile.open(path, "r:") as archive:
        _collect(archive, expected)
    assert _walk_headers(path) == expected
    assert len(expected) == (3 if form != tarfile.USTAR_FORMAT else 2)


def test_a_tar_the_walk_does_not_know_is_left_to_tarfile(tmp_path: Path) -> None:
    path = tmp_path / "global.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g"}) as tar:
        tar.addfile(device("dev/null"))
    assert _walk_headers(path) is None  # a pax global header
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    assert _walk_headers(tmp_path / "junk.tar") is None
