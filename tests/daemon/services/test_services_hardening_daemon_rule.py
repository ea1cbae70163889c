"""The HPA rule as Kubernetes applies it (issue 11 item 16): the average is taken over the
replicas that have a sample, and a replica that just started (no sample yet, or not ready)
counts as idle on a scale-up, so one busy replica of two never recommends 4."""

from __future__ import annotations

from carte.handlers.services._autoscale_rule import Metric, recommend


def test_one_busy_of_two_with_a_new_replica_does_not_overshoot() -> None:
    # the new replica is ready but has no CPU sample yet: 2 -> 4 before
    assert recommend(2, [Metric(99.74, 50, measured=1, missing=1)], 0.1) in (2, 3)
    # both sampled, one idle: the average is 50 %, the target
    assert recommend(2, [Metric(49.87, 50, measured=2)], 0.1) == 2


def test_one_busy_of_three_with_replicas_not_ready_yet_keeps_three() -> None:
    assert recommend(3, [Metric(100, 50, measured=1, unready=2)], 0.1) == 3


def test_busy_replicas_still_scale_up_by_the_ratio() -> None:
    assert recommend(2, [Metric(100, 50, measured=2)], 0.1) == 4
    assert recommend(3, [Metric(100, 50, measured=2, missing=1)], 0.1) == 4


def test_missing_samples_count_at_target_on_a_scale_down() -> None:
    # alone, 10 % of 50 would give 1; the replica without a sample counts at the target
    assert recommend(2, [Metric(10, 50, measured=1, missing=1)], 0.1) == 2
    # not-ready replicas are left out of a scale-down
    assert recommend(4, [Metric(10, 50, measured=2, unready=2)], 0.1) == 1
