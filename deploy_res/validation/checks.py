"""Judging a validation: every limit that applies becomes a check with an outcome, and the checks one verdict.

Two kinds of check (:mod:`.thresholds` says which limit is which):

- **every sample** (FP32, and the finiteness of every output): the engine must compute what PyTorch computes on
  each sample, so the observed value over all samples is judged: the largest error, the smallest cosine, the
  share of agreeing top-1s. A single bad sample fails it, which is the point: these guard graph passes.
- **statistics** (FP16, BF16, INT8): the engine approximates the original, so a limit applies to a statistic of
  the population the samples come from, judged by its confidence interval (:mod:`.intervals`):
  ``pass`` when the whole interval lies on the good side of the limit, ``fail`` when it lies wholly on the bad
  side, ``inconclusive`` when it straddles the limit, with the sample count that would decide it.

The verdict: ``fail`` if any check fails, else ``pass`` if every check passes, else ``inconclusive``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import numpy as np

from deploy_res.core import intervals
from deploy_res.validation.metrics import MetricState
from deploy_res.validation.thresholds import STATISTICS, UPPER_BOUNDS

OUTCOMES = ("pass", "fail", "inconclusive")


def _every_sample(name: str, value: float, limit: float) -> dict[str, Any]:
    passed = value <= limit if name in (*UPPER_BOUNDS, "finite") else value >= limit
    return {"name": name, "value": value, "limit": limit, "method": "every sample", "interval": None,
            "outcome": "pass" if passed else "fail"}


def _scaled_drop(state: MetricState, depth: str, confidence: float) -> Callable[[float], intervals.Interval]:
    both, reference_only, artifact_only, neither = state.table(depth)
    n = state.labelled
    return lambda m: tuple(None if v is None else 100.0 * v for v in intervals.paired_difference_interval(
        both * m / n, reference_only * m / n, artifact_only * m / n, neither * m / n, confidence))


def _scaled_agreement(state: MetricState, confidence: float) -> Callable[[float], intervals.Interval]:
    share = state.top1_agree / state.samples
    return lambda m: intervals.proportion_interval(share * m, m, confidence)


def _scaled_mean(state: MetricState, confidence: float) -> Callable[[float], intervals.Interval]:
    values = state.cosines
    mean = math.fsum(values) / values.size
    sd = float(np.std(values, ddof=1)) if values.size > 1 else math.inf
    z = intervals._z(confidence)
    return lambda m: (mean - z * sd / math.sqrt(m), mean + z * sd / math.sqrt(m)) if m > 1 and math.isfinite(sd) else (None, None)


def _scaled_quantile(state: MetricState, q: float, limit: float, confidence: float) -> Callable[[float], intervals.Interval]:
    """The quantile's interval at ``m`` samples drawn like these: its ends are only compared with ``limit``, so they
    are found through the share of samples below the limit (exact ranks up to 100,000 samples, normal beyond)."""
    values = state.cosines
    below = float(np.count_nonzero(values < limit)) / values.size

    def interval(m: float) -> intervals.Interval:
        m = int(m)
        if m == values.size:
            return intervals.quantile_interval(values, q, confidence)
        if m <= 100_000:
            r, s = intervals.quantile_ranks(m, q, confidence)
        else:
            spread = intervals._z(confidence) * math.sqrt(m * q * (1 - q))
            r, s = int(math.floor(m * q - spread)), int(math.ceil(m * q + spread)) + 1
        count = below * m  # samples below the limit among m
        low = None if r is None or r < 1 else (limit if count < r else -math.inf)
        high = None if s is None or s > m else (-math.inf if count >= s else limit)
        return (low, high)

    return interval


def _statistic(name: str, value: float, limit: float, n: int, interval_at: Callable[[float], intervals.Interval],
               confidence: float) -> dict[str, Any]:
    upper = name in UPPER_BOUNDS
    interval = interval_at(n)
    outcome = intervals.outcome(interval, limit, upper)
    check = {"name": name, "value": value, "limit": limit, "method": STATISTICS[name], "interval": list(interval),
             "confidence": confidence, "outcome": outcome}
    if outcome == "inconclusive":
        if value == limit:
            check["samples_to_decide"] = None
        else:
            check["samples_to_decide"] = intervals.samples_to_decide(
                lambda m: intervals.outcome(interval_at(m), limit, upper) != "inconclusive", n)
    return check


def evaluate(state: MetricState, metrics: Mapping[str, Any], accuracy: Optional[Mapping[str, float]],
             limits: Mapping[str, Optional[float]], every_sample: frozenset[str] = frozenset(),
             confidence: float = intervals.DEFAULT_CONFIDENCE) -> list[dict[str, Any]]:
    """One check per limit that applies (a label limit needs labels, an agreement limit more than one class), after
    one that every output is finite. ``limits`` maps a limit name to its value (None: not judged); the names in
    ``every_sample`` are judged on the observed value, the others by their interval at ``confidence``."""
    checks = [_every_sample("finite", metrics["nonfinite"], 0)]
    for name, limit in limits.items():
        source = accuracy if name.endswith("_drop_points") else metrics
        if limit is None or not source or name not in source:
            continue
        value = source[name]
        if name in every_sample:
            checks.append(_every_sample(name, value, limit))
            continue
        n = state.labelled if name.endswith("_drop_points") else state.samples
        interval_at = {
            "top1_drop_points": lambda: _scaled_drop(state, "top1", confidence),
            "top5_drop_points": lambda: _scaled_drop(state, "top5", confidence),
            "top1_agreement": lambda: _scaled_agreement(state, confidence),
            "cosine_mean": lambda: _scaled_mean(state, confidence),
            "cosine_p5": lambda: _scaled_quantile(state, 0.05, limit, confidence),
        }[name]()
        checks.append(_statistic(name, value, limit, n, interval_at, confidence))
    for check in checks:
        check["bound"] = "upper" if check["name"] in (*UPPER_BOUNDS, "finite") else "lower"
        check["passed"] = check["outcome"] == "pass"
    return checks


def verdict(checks: list[dict[str, Any]]) -> str:
    """``fail`` if any check fails, ``pass`` if all pass, else ``inconclusive``."""
    outcomes = {check["outcome"] for check in checks}
    return "fail" if "fail" in outcomes else "pass" if outcomes <= {"pass"} else "inconclusive"


def samples_to_decide(checks: list[dict[str, Any]]) -> Optional[int]:
    """How many samples would decide every inconclusive check (the largest count any needs), None if one cannot be
    decided within :data:`deploy_res.core.intervals.SEARCH_CAP` samples or at its measured value."""
    needed = [check.get("samples_to_decide") for check in checks if check["outcome"] == "inconclusive"]
    return None if not needed or None in needed else max(needed)


def describe(check: Mapping[str, Any], with_samples: bool = True) -> str:
    """One check in words: ``top1_drop_points 0.57 [-0.21, 1.35] straddles 1 (95 % interval); about 10,400 samples
    would decide it`` (that last part only ``with_samples``)."""
    value, limit = check["value"], check["limit"]
    if check.get("interval") is None:
        relation = ("<=" if check["passed"] else ">") if check["bound"] == "upper" else (">=" if check["passed"] else "<")
        return f"{check['name']} {value:.6g} {relation} {limit:g} (every sample)"
    low, high = check["interval"]
    shown = f"[{'-inf' if low is None else f'{low:.4g}'}, {'inf' if high is None else f'{high:.4g}'}]"
    relation = {"pass": "<=" if check["bound"] == "upper" else ">=", "fail": ">" if check["bound"] == "upper" else "<",
                "inconclusive": "straddles"}[check["outcome"]]
    text = f"{check['name']} {value:.4g} {shown} {relation} {limit:g} ({100 * check['confidence']:g} % interval)"
    if check["outcome"] == "inconclusive" and with_samples:
        needed = check.get("samples_to_decide")
        text += f"; about {needed:,} samples would decide it" if needed else "; more samples cannot decide it at this value"
    return text
