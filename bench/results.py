"""What a benchmark reports: one `Result` per row, and A/B interleaving of timed commands."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Result:
    """One row: Carte's median against another's, and the issue's target for it.

    `limit` is the target: a ratio (carte / other must be <= limit) when `other` is set, else
    an absolute bound on `carte` in `unit` (<= limit). `met` is None when there is no target.
    """

    bench: str
    measure: str
    carte: float
    unit: str
    other: float | None = None
    other_name: str = ""
    limit: float | None = None
    runs: int = 1
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.other is None or self.other == 0:
            return None
        return self.carte / self.other

    @property
    def met(self) -> bool | None:
        if self.limit is None:
            return None
        value = self.ratio if self.other is not None else self.carte
        return value is not None and value <= self.limit

    @property
    def target(self) -> str:
        if self.limit is None:
            return ""
        if self.other is not None:
            return f"<= {self.limit:g}x"
        return f"<= {self.limit:g} {self.unit}"

    @classmethod
    def of_medians(
        cls,
        bench: str,
        measure: str,
        samples: dict[str, list[float]],
        ours: str,
        theirs: str,
        other_name: str,
        *,
        limit: float,
        runs: int,
        note: str = "",
    ) -> Result:
        """A row in seconds: the median of `samples[ours]` against that of `samples[theirs]`,
        with the samples kept for the JSON report."""
        carte, other = median(samples[ours]), median(samples[theirs])
        return cls(bench, measure, carte, "s", other, other_name, limit, runs, note, samples)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, met=self.met, target=self.target)
        return data


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleave(
    candidates: dict[str, Callable[[], float]], runs: int, warm: int = 1
) -> dict[str, list[float]]:
    """Call each candidate in turn, `runs` rounds, rotating the order every round so drifting
    machine load hits all alike; the first `warm` rounds (page cache, .pyc files) are dropped."""
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(warm + runs):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            value = candidates[name]()
            if round_number >= warm:
                samples[name].append(value)
    return samples


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s" and value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.1 else f"{value * 1000:.1f} ms"
    if unit == "ms" and value < 10:
        return f"{value:.1f} ms"
    if unit in ("s", "MB") and value < 10:
        return f"{value:.2f} {unit}"
    return f"{value:.1f} {unit}" if unit not in ("%",) else f"{value:.1f} %"


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def emit(results: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Print a script's `results` as JSON, write them to `path` too when given; return them."""
    print(json.dumps(results, indent=2))
    if path:
        path.write_text(json.dumps(results, indent=2) + "\n")
    return results
