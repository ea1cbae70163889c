"""The build routes against a real daemon: kept context copies stay capped (issue 10 item 7)."""

from __future__ import annotations

from pathlib import Path

from build_checks import build
from support.daemon import DaemonFactory

from carte.handlers.images._build_routes import KEPT_SESSIONS


def test_kept_build_contexts_stay_capped(daemons: DaemonFactory, tmp_path: Path) -> None:
    """Builds from more distinct context directories than the cap leave at most the cap of
    kept copies (the most recent ones), not one per directory ever built."""
    daemon = daemons()
    for number in range(KEPT_SESSIONS + 3):
        context = tmp_path / f"ctx{number}"
        context.mkdir()
        (context / "Dockerfile").write_text("FROM scratch\nCOPY data /data\n")
        (context / "data").write_text(f"context {number}\n")
        built = build(daemon, context, "-q", "-t", f"capped:{number}")
        assert built.returncode == 0, built.stderr
    kept = sorted((daemon.root / "build-contexts").glob("session-*"))
    kept_dirs = [path for path in kept if path.is_dir()]
    assert len(kept_dirs) == KEPT_SESSIONS, kept
    assert len(kept) <= 2 * KEPT_SESSIONS  # a copy and its manifest file at most
    # the last context's copy is kept: rebuilding it sends no file again
    rebuilt = build(daemon, tmp_path / f"ctx{KEPT_SESSIONS + 2}", "-t", "capped:again")
    assert rebuilt.returncode == 0, rebuilt.stderr
