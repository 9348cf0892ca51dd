"""Confidence intervals behind every statistical verdict, and how many samples would make one decide.

Each function takes counts or values over N samples and returns ``(low, high)`` at ``confidence``
(default 0.95, two-sided); ``None`` for a side the data cannot bound.

- :func:`proportion_interval`: a share of samples (top-1 agreement): the Wilson score interval.
- :func:`paired_difference_interval`: the difference of two accuracies measured on the *same* samples
  (reference minus artifact): Bonett and Price's adjusted Wald interval for paired proportions (*Journal of
  Educational and Behavioral Statistics* 37:479, 2012). It uses only the discordant pairs, ``b`` samples only the
  reference gets right and ``c`` only the artifact gets right, each plus one: ``p12 = (b+1)/(N+2)``,
  ``p21 = (c+1)/(N+2)``, ``p12 - p21 +- z * sqrt((p12 + p21 - (p12 - p21)^2) / (N+2))``. So it narrows with the
  discordance, not with the accuracy itself, and keeps an honest width when no pair is discordant (at
  ``b = c = 0`` and N = 450 it is +-0.6 points), where the plain Wald and bootstrap intervals collapse to zero.
- :func:`quantile_interval`: a low percentile of per-sample values (cosine): distribution-free, by order
  statistics (the rank of the sample that bounds the quantile comes from the binomial distribution).
- :func:`mean_interval`: a mean of per-sample values: the normal approximation, ``z * sd / sqrt(N)``.

:func:`samples_to_decide` answers "how many samples would decide it" for any of them: the smallest N at
which the same data, in the same proportions, would give an interval that lies on one side of the limit.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Optional, Sequence

import numpy as np

Interval = tuple[Optional[float], Optional[float]]

DEFAULT_CONFIDENCE = 0.95
SEARCH_CAP = 10_000_000
""":func:`samples_to_decide` looks no further than this many samples."""


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def proportion_interval(k: float, n: float, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval of the share ``k / n`` (fractions; ``k`` and ``n`` may be scaled, non-integer counts)."""
    if n <= 0:
        return (None, None)
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference_interval(both: float, reference_only: float, artifact_only: float, neither: float,
                               confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Interval of ``p_reference - p_artifact`` (fractions) from the paired 2x2 table: Bonett and Price's adjusted Wald."""
    n = both + reference_only + artifact_only + neither
    if n <= 0:
        return (None, None)
    p12, p21 = (reference_only + 1) / (n + 2), (artifact_only + 1) / (n + 2)
    half = _z(confidence) * math.sqrt(max(p12 + p21 - (p12 - p21) ** 2, 0.0) / (n + 2))
    return (max(-1.0, p12 - p21 - half), min(1.0, p12 - p21 + half))


def _binomial_cdf(n: int, q: float) -> np.ndarray:
    """``P(Binomial(n, q) <= k)`` for k = 0..n (pmf built by its ratio recurrence in log space)."""
    k = np.arange(n, dtype=np.float64)
    steps = np.log((n - k) / (k + 1)) + math.log(q) - math.log1p(-q)
    log_pmf = np.concatenate(([n * math.log1p(-q)], n * math.log1p(-q) + np.cumsum(steps)))
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def quantile_ranks(n: int, q: float, confidence: float = DEFAULT_CONFIDENCE) -> tuple[Optional[int], Optional[int]]:
    """1-based ranks ``(r, s)`` of the sorted samples that bound the ``q``-quantile: ``x_(r) <= quantile <= x_(s)``
    with probability at least ``confidence``; ``None`` where ``n`` samples cannot bound that side."""
    alpha = (1.0 - confidence) / 2.0
    cdf = _binomial_cdf(n, q)  # cdf[k] = P(X <= k), X = samples below the quantile
    low = int(np.searchsorted(cdf, alpha, side="right"))  # largest r with P(X <= r - 1) <= alpha
    high = int(np.searchsorted(cdf, 1.0 - alpha, side="left")) + 1  # smallest s with P(X <= s - 1) >= 1 - alpha
    return (low if low >= 1 else None, high if high <= n else None)


def quantile_interval(values: Sequence[float], q: float, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Distribution-free interval of the ``q``-quantile of the population ``values`` were drawn from."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if not ordered.size:
        return (None, None)
    r, s = quantile_ranks(ordered.size, q, confidence)
    return (None if r is None else float(ordered[r - 1]), None if s is None else float(ordered[s - 1]))


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile of ``values`` (the sample of rank ``ceil(q * N)``, the estimate the interval brackets)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    return float(ordered[max(0, math.ceil(q * ordered.size) - 1)]) if ordered.size else math.nan


def mean_interval(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Normal-approximation interval of the mean of ``values``: ``mean +- z * sd / sqrt(N)``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return (None, None)
    mean, half = float(np.mean(x)), _z(confidence) * float(np.std(x, ddof=1)) / math.sqrt(x.size)
    return (mean - half, mean + half)


def outcome(interval: Interval, limit: float, upper_bound: bool) -> str:
    """``pass`` when the whole interval lies on the good side of ``limit``, ``fail`` when it lies wholly on the bad side,
    ``inconclusive`` when it straddles the limit (or a side is unbounded). ``upper_bound``: the value must stay at or below."""
    low, high = interval
    if upper_bound:
        if high is not None and high <= limit:
            return "pass"
        return "fail" if low is not None and low > limit else "inconclusive"
    if low is not None and low >= limit:
        return "pass"
    return "fail" if high is not None and high < limit else "inconclusive"


def samples_to_decide(decides: Callable[[int], bool], n: int) -> Optional[int]:
    """The smallest sample count above ``n`` at which ``decides(count)`` holds (the same data, scaled), or None past
    :data:`SEARCH_CAP`. ``decides`` must be monotone in the count, as every interval here narrows with N."""
    low, high = n, max(2 * n, n + 1)
    while not decides(high):
        if high >= SEARCH_CAP:
            return None
        low, high = high, min(SEARCH_CAP, 2 * high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle, high)
    return high
