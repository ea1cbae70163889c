"""Layer extraction fed generated tar archives (names with `..`, absolute paths, symlinks and
hard links pointing anywhere, whiteouts, devices, entries replacing each other): the archive
is unpacked inside its target or refused as an unsafe or invalid layer, never another
exception, and nothing outside the target is ever created or changed. Root: entries keep
their owners and device nodes are made for trusted layers."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from fuzz_settings import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from carte.api.errors import InvalidArgument
from carte.image.errors import UnsafeLayer
from carte.image.layers import extract_layer

PARTS = ["a", "b", "..", ".", "", "outside", ".wh.a", ".wh..wh..opq", "etc", "x" * 200]
names = st.one_of(
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=5).map("/".join),
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
    st.text(max_size=20),
)
link_targets = st.one_of(
    names,
    st.sampled_from(["/", "..", "../outside", "../outside/sentinel", "/etc/passwd", "a", "a/b"]),
)
KINDS = [
    tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
    tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.GNUTYPE_SPARSE, b"Z",
]  # fmt: skip
members = st.tuples(
    names,
    st.sampled_from(KINDS),
    link_targets,
    st.binary(max_size=64),
    st.integers(min_value=0, max_value=0o7777),
    st.sampled_from([0, 1000, 65534, 2**21 - 1]),
    st.dictionaries(
        st.sampled_from(["SCHILY.xattr.user.a", "SCHILY.xattr.trusted.overlay.opaque", "path"]),
        st.text(max_size=8),
        max_size=2,
    ),
)


def archive(entries: list[tuple[str, bytes, str, bytes, int, int, dict[str, str]]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target, data, mode, owner, pax in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.uid = info.gid = owner
            info.linkname = target if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            info.pax_headers = pax
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            body = data if kind in (tarfile.REGTYPE, b"Z") else b""
            info.size = len(body)
            try:
                tar.addfile(info, io.BytesIO(body))
            except (ValueError, UnicodeError):
                continue  # a name tarfile itself cannot write
    return out.getvalue()


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every path below `directory` (not following symlinks) with its mode, size and mtime."""
    seen = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root, name)
            info = path.lstat()
            seen[str(path)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return seen


@FUZZ
@given(entries=st.lists(members, max_size=8), trusted=st.booleans(), cut=st.integers(0, 3))
def test_layer_stays_inside_its_target_or_is_refused(
    entries: list[tuple[str, bytes, str, bytes, int, int, dict[str, str]]],
    trusted: bool,
    cut: int,
) -> None:
    data = archive(entries)
    if cut:
        data = data[: len(data) * cut // 4]  # a truncated download
    with tempfile.TemporaryDirectory(prefix="carte-fuzz-") as work:
        base = Path(work)
        outside = base / "outside"
        outside.mkdir()
        (outside / "sentinel").write_text("keep")
        target = base / "layer"
        target.mkdir()
        before = snapshot(outside)
        try:
            extract_layer(io.BytesIO(data), target, trusted=trusted, what="fuzzed")
        except InvalidArgument as error:
            assert "layer" in str(error) or "fuzzed" in str(error), str(error)
        assert sorted(p.name for p in base.iterdir()) == ["layer", "outside"]
        assert snapshot(outside) == before
        assert (outside / "sentinel").read_text() == "keep"
        for path in snapshot(target):
            resolved = Path(path).parent.resolve()
            assert resolved == target or target in resolved.parents, path


def test_a_nul_byte_in_a_name_or_link_is_an_unsafe_layer(tmp_path: Path) -> None:
    """Found by the fuzzer: a PAX `path` or `linkpath` with a NUL byte raised ValueError."""
    for pax in ({"path": "a\0b"}, {"linkpath": "x\0y"}):
        info = tarfile.TarInfo("a")
        info.type = tarfile.SYMTYPE
        info.pax_headers = pax
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info)
        target = tmp_path / ("name" if "path" in pax else "link")
        target.mkdir()
        with pytest.raises(UnsafeLayer, match="NUL byte"):
            extract_layer(io.BytesIO(out.getvalue()), target, trusted=False, what="nul")
