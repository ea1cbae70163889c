"""Fixtures of the net tests: `lab`, a per-test `NetLab` that removes what it made."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from net_lab import NetLab


@pytest.fixture
def lab() -> Iterator[NetLab]:
    network_lab = NetLab()
    try:
        yield network_lab
    finally:
        network_lab.close()
