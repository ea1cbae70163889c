"""Fixtures for the image tests: a real content store in a per-test tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from carte.image.store import ImageStore


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "root")
