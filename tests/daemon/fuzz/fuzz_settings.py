"""Hypothesis settings shared by the fuzzers: a short run by default (CI), a longer one with
CARTE_FUZZ_EXAMPLES=N (examples per fuzzer). Each example has a deadline, so a parser that
hangs or goes quadratic on some input fails instead of stalling the suite."""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("CARTE_FUZZ_EXAMPLES", "60"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("CARTE_FUZZ_RANDOM", "") == "",
    database=None,
    print_blob=True,
)
"""Derandomized (the same examples each run, so CI is reproducible) unless CARTE_FUZZ_RANDOM
is set; failing examples are printed with the blob that replays them."""
