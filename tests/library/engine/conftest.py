"""Fixtures for the engine tests: a real SQLite store and a handler context around a bus."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from carte.engine import Bus, Config, HandlerContext, SqliteStore, open_sqlite_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "state.db") as opened:
        yield opened


@pytest.fixture
def engine_ctx(store: SqliteStore, tmp_path: Path) -> HandlerContext:
    return HandlerContext(
        bus=Bus(), store=store, config=Config(), root=tmp_path, run_root=tmp_path / "run"
    )
