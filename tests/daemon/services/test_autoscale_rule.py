"""The HPA rule and its scale-down stabilization, timed with trio's MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from carte.handlers.services._autoscale_rule import Metric, Stabilizer, recommend


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def test_rule_scales_by_ratio_with_tolerance() -> None:
    assert recommend(1, [Metric(utilization=100, target=50)], 0.1) == 2
    assert recommend(3, [Metric(utilization=90, target=50)], 0.1) == 6
    assert recommend(4, [Metric(utilization=54, target=50)], 0.1) == 4  # within 10 %
    assert recommend(4, [Metric(utilization=10, target=50)], 0.1) == 1
    assert recommend(4, [Metric(utilization=10, target=50), Metric(80, 50)], 0.1) == 7
    assert recommend(4, [Metric(utilization=10, target=50), Metric(50, 50)], 0.1) == 4


async def test_scale_down_waits_for_the_window(autojump_clock: trio.testing.MockClock) -> None:
    stabilizer = Stabilizer(window=300)
    start = trio.current_time()
    current = stabilizer.decide(trio.current_time(), 1, 3, 1, 5)
    assert current == 3  # scale-up is immediate
    while True:
        await trio.sleep(15)
        desired = stabilizer.decide(trio.current_time(), current, 1, 1, 5)
        if desired < current:
            break
        assert desired == current
    assert trio.current_time() - start > 300
    assert desired == 1


async def test_bounds_clamp(autojump_clock: trio.testing.MockClock) -> None:
    stabilizer = Stabilizer(window=0)
    assert stabilizer.decide(trio.current_time(), 2, 9, 1, 4) == 4
    await trio.sleep(1)
    assert stabilizer.decide(trio.current_time(), 4, 0, 2, 4) == 2
