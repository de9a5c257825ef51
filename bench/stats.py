"""Percentiles, medians, rates and ratios of the benchmark's measurements."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the `fraction` quantile of `values` (0.5 is the median, 0.99 the p99).

    Interpolates linearly between the two nearest ranks, as numpy's default method
    does. Raises ValueError for an empty sequence or a fraction outside [0, 1].
    """
    if not values:
        raise ValueError("percentile of an empty sequence is undefined; measure something first")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")

    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    weight = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * weight


def median(values: Sequence[float]) -> float:
    """Return the median of `values`; raises ValueError for an empty sequence."""
    if not values:
        raise ValueError("median of an empty sequence is undefined; run at least once")
    return float(statistics.median(values))


def rate(count: int, seconds: float) -> float:
    """Return `count` per second; raises ValueError when `seconds` is not positive."""
    if seconds <= 0:
        raise ValueError(f"cannot compute a rate over {seconds} s; the duration must be positive")
    return count / seconds


def ratio(value: float | None, floor: float | None) -> float | None:
    """Return `value / floor`, or None when either is missing or the floor is not positive."""
    if value is None or floor is None or floor <= 0:
        return None
    return value / floor


@dataclass(frozen=True)
class LatencySummary:
    """p50, p99 and maximum of a set of latencies, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "max_ms": round(self.max_ms, 1),
        }


def summarize_latencies(seconds: Sequence[float]) -> LatencySummary:
    """Summarize latencies given in seconds; raises ValueError for an empty sequence."""
    milliseconds = [value * 1000.0 for value in seconds]
    return LatencySummary(
        count=len(milliseconds),
        p50_ms=percentile(milliseconds, 0.50),
        p99_ms=percentile(milliseconds, 0.99),
        max_ms=max(milliseconds),
    )


def median_summary(summaries: Sequence[LatencySummary]) -> LatencySummary:
    """Return the per-statistic median of several runs' summaries (p50, p99 and max each)."""
    if not summaries:
        raise ValueError("median of no latency runs is undefined; run at least once")
    return LatencySummary(
        count=sum(summary.count for summary in summaries),
        p50_ms=median([summary.p50_ms for summary in summaries]),
        p99_ms=median([summary.p99_ms for summary in summaries]),
        max_ms=median([summary.max_ms for summary in summaries]),
    )
