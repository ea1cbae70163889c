"""The tar-member checks used where Python has no extraction filters (Debian 12's 3.11.2)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from carte.api.tar_members import UnsafeMember, checked_member


def _archive(entries: list[tuple[str, bytes, str]]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, 0o4777
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def _extract(tar: tarfile.TarFile, dest: Path, *, allow_devices: bool = True) -> None:
    for member in tar:
        tar.extract(checked_member(member, str(dest), allow_devices=allow_devices), dest)


def test_plain_members_extract_without_setuid_bits(tmp_path: Path) -> None:
    _extract(_archive([("a", tarfile.DIRTYPE, ""), ("a/b", tarfile.REGTYPE, "")]), tmp_path)
    assert (tmp_path / "a/b").read_bytes() == b"x"
    assert os.stat(tmp_path / "a/b").st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ([("../escaped", tarfile.REGTYPE, "")], "../escaped"),
        ([("/abs-escaped", tarfile.REGTYPE, "")], "/abs-escaped"),
        ([("l", tarfile.SYMTYPE, "../../.."), ("l/x", tarfile.REGTYPE, "")], '"l"'),
        ([("m", tarfile.SYMTYPE, "/"), ("m/escaped", tarfile.REGTYPE, "")], "m/escaped"),
        ([("h", tarfile.LNKTYPE, "/etc/passwd")], '"h"'),
    ],
)
def test_escaping_members_are_refused_and_nothing_lands_outside(
    tmp_path: Path, entries: list[tuple[str, bytes, str]], named: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeMember, match=named):
        _extract(_archive(entries), dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert not Path("/escaped").exists()


def test_devices_refused_in_strict_mode(tmp_path: Path) -> None:
    with pytest.raises(UnsafeMember, match="device"):
        _extract(_archive([("null", tarfile.CHRTYPE, "")]), tmp_path, allow_devices=False)
