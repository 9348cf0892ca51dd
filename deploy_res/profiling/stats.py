"""Latency statistics: percentiles by linear interpolation (numpy's default) and one summary per series.

``percentile(samples, q)`` matches ``numpy.percentile(samples, q)`` with the
default ``linear`` method: the sorted samples sit at ranks ``0 .. n-1`` and
the q-th percentile is read at rank ``(n - 1) * q / 100``, interpolating
between neighbours. Standard deviation is the sample one (``ddof=1``; 0 for a
single sample).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

PERCENTILES = (50, 90, 95, 99)
"""The percentiles every summary reports (as ``p50``, ``p90``, ``p95``, ``p99``)."""


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``samples`` by linear interpolation; ValueError when empty."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(latencies_ms: Iterable[float], batch: int = 1) -> dict[str, float]:
    """Summary of per-iteration latencies in milliseconds for ``batch`` samples per iteration.

    Keys: ``iterations``, ``mean_ms``, ``std_ms``, ``min_ms``, ``p50_ms``, ``p90_ms``,
    ``p95_ms``, ``p99_ms``, ``max_ms``, ``throughput`` (samples/s = batch * iterations /
    total measured time).
    """
    values = [float(v) for v in latencies_ms]
    if not values:
        raise ValueError("no latencies to summarise")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    summary = {"iterations": n, "mean_ms": mean, "std_ms": std, "min_ms": min(values)}
    for q in PERCENTILES:
        summary[f"p{q}_ms"] = percentile(values, q)
    summary["max_ms"] = max(values)
    total_s = sum(values) / 1000
    summary["throughput"] = batch * n / total_s if total_s > 0 else float("inf")
    return summary
