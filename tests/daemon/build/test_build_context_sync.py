"""The daemon's kept build contexts: only changed files travel, deletions and metadata follow,
and an upload cannot write outside its directory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from carte.build._context import (
    ContextEntry,
    ContextError,
    ContextUpload,
    apply_upload,
    needed_files,
)


def _upload(target: Path, entries: list[ContextEntry], contents: dict[str, bytes]) -> None:
    needed = needed_files(target, entries)
    stream = io.BytesIO(b"".join(contents[entries[i].path] for i in needed))
    apply_upload(target, ContextUpload(entries=entries, sent=needed), stream.read)


def test_second_upload_sends_only_changed_files_and_drops_deleted(tmp_path: Path) -> None:
    target = tmp_path / "session"
    entries = [
        ContextEntry("a.txt", "f", 0o644, 0, 0, 2, 1_000),
        ContextEntry("dir", "d", 0o755, 0, 0, 0, 1_000),
        ContextEntry("dir/b.txt", "f", 0o600, 5, 6, 3, 2_000),
        ContextEntry("link", "l", 0o777, 0, 0, 0, 1_000, "a.txt"),
    ]
    _upload(target, entries, {"a.txt": b"a\n", "dir/b.txt": b"bb\n"})
    assert (target / "dir/b.txt").read_bytes() == b"bb\n"
    assert (target / "dir/b.txt").stat().st_uid == 5
    assert (target / "link").readlink() == Path("a.txt")
    assert needed_files(target, entries) == []
    changed = [
        ContextEntry("a.txt", "f", 0o644, 0, 0, 3, 5_000),
        ContextEntry("dir", "d", 0o755, 0, 0, 0, 1_000),
    ]
    assert needed_files(target, changed) == [0]
    _upload(target, changed, {"a.txt": b"aa\n"})
    assert (target / "a.txt").read_bytes() == b"aa\n"
    assert not (target / "dir/b.txt").exists() and not (target / "link").is_symlink()


@pytest.mark.parametrize("path", ["../escape", "/abs", "a/../../b", "a//b", ""])
def test_paths_outside_the_context_are_refused(tmp_path: Path, path: str) -> None:
    entries = [ContextEntry(path, "f", 0o644, 0, 0, 1, 0)]
    with pytest.raises(ContextError):
        apply_upload(
            tmp_path / "s", ContextUpload(entries=entries, sent=[0]), io.BytesIO(b"x").read
        )


def test_no_write_through_a_symlinked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = [
        ContextEntry("evil", "l", 0o777, 0, 0, 0, 0, str(outside)),
        ContextEntry("evil/planted", "f", 0o644, 0, 0, 1, 0),
    ]
    with pytest.raises(ContextError, match="below a non-directory"):
        apply_upload(
            tmp_path / "s", ContextUpload(entries=entries, sent=[1]), io.BytesIO(b"x").read
        )
    assert list(outside.iterdir()) == []
