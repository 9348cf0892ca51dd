"""Judging one measured serving point against the budgets, and ranking points by the objective.

The p99 budget is judged like every other verdict in deployres: on an interval, not a point estimate. The p99 of the
request latencies gets its distribution-free order-statistic interval (:func:`deploy_res.core.intervals.quantile_interval`,
95 %); a point meets ``p99_ms`` only when the whole interval lies at or below it (outcome ``pass``). An interval that
straddles the budget, or whose upper side the requests cannot bound (fewer than 368 requests cannot bound a p99 from
above at 95 %), is ``inconclusive`` and does not meet it. ``min_throughput`` is judged on the measured images/s, and a
point whose requests failed never meets anything.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from deploy_res.core.intervals import outcome, quantile, quantile_interval

P99 = 0.99


def latency_figures(latencies_ms: Sequence[float]) -> dict[str, Any]:
    """p50, p99 and the p99's 95 % interval (ms) of per-request latencies."""
    if not len(latencies_ms):
        return {"requests": 0, "p50_ms": None, "p99_ms": None, "p99_interval_ms": [None, None]}
    low, high = quantile_interval(latencies_ms, P99)
    return {"requests": len(latencies_ms), "p50_ms": quantile(latencies_ms, 0.5), "p99_ms": quantile(latencies_ms, P99),
            "p99_interval_ms": [low, high]}


def judge(point: Mapping[str, Any], p99_ms: Optional[float], min_throughput: Optional[float]) -> dict[str, Any]:
    """The budget checks of one measured point: ``{"meets": bool, "checks": [...], "failed": "why" or None}``.

    ``point`` holds ``p99_interval_ms``, ``p99_ms``, ``throughput`` and ``errors``.
    """
    checks = []
    if point.get("errors"):
        checks.append({"name": "errors", "value": point["errors"], "limit": 0, "outcome": "fail"})
    if p99_ms is not None:
        interval = tuple(point.get("p99_interval_ms") or (None, None))
        checks.append({"name": "p99_ms", "value": point.get("p99_ms"), "interval": list(interval), "limit": p99_ms,
                       "outcome": outcome(interval, p99_ms, upper_bound=True) if point.get("p99_ms") is not None else "fail"})
    if min_throughput is not None:
        value = point.get("throughput") or 0.0
        checks.append({"name": "throughput", "value": value, "limit": min_throughput, "outcome": "pass" if value >= min_throughput else "fail"})
    failed = [c for c in checks if c["outcome"] != "pass"]
    return {"meets": not failed, "checks": checks, "failed": "; ".join(describe(c) for c in failed) or None}


BOUNDING_REQUESTS = 368
"""Fewest requests whose order statistics bound a p99 from above at 95 % (1 - 0.99**368 > 0.975)."""


def undecided(point: Mapping[str, Any]) -> bool:
    """Whether ``point``'s p99 budget is still INCONCLUSIVE on its requests (more requests may decide it)."""
    return any(c["name"] == "p99_ms" and c["outcome"] == "inconclusive" for c in point["judgement"]["checks"])


def requests_to_decide(point: Mapping[str, Any], budget: float) -> float:
    """About how many requests would decide an undecided p99 budget: at least 2 x :data:`BOUNDING_REQUESTS`; once the
    interval has both sides, as many as shrink its side facing the budget to the p99's distance from it (the width
    of an order-statistic interval falls as 1/sqrt(requests)). A p99 exactly at the budget: infinitely many."""
    low, high = point["p99_interval_ms"]
    p99, requests = point["p99_ms"], point["requests"]
    floor = 2 * BOUNDING_REQUESTS
    if low is None or high is None or p99 is None:
        return float(floor)
    distance = abs(budget - p99)
    side = (high - p99) if p99 <= budget else (p99 - low)
    if distance == 0:
        return float("inf")
    return max(float(floor), requests * (side / distance) ** 2)


def serve_longer(point: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], budget: float, seconds: float,
                 max_seconds: float) -> tuple[float, Optional[str]]:
    """How many seconds more to serve an :func:`undecided` point after ``runs`` (each with its ``seconds`` and
    ``requests``) so that its p99 budget is decided: time for 1.2 x :func:`requests_to_decide` requests at the rate
    measured so far, at least ``seconds``, at most what ``max_seconds`` in all leaves. ``(0, why)`` when deciding it
    would take longer than ``max_seconds`` (its p99 lies too near the budget); ``(0, None)`` when under half of
    ``seconds`` is left."""
    spent, requests = sum(r["seconds"] for r in runs), sum(r["requests"] for r in runs)
    per_request, needed, left = spent / max(1, requests), requests_to_decide(point, budget), max_seconds - spent
    if needed > requests and (needed - requests) * per_request > left:
        return 0.0, (f"its p99 {point['p99_ms']:.1f} ms is so near the {budget:g} ms budget that about {needed:.0f} requests "
                     f"would decide it, more than --max-point-seconds {max_seconds:g} gives")
    longer = min(left, max(seconds, (1.2 * needed - requests) * per_request))
    return (longer, None) if longer >= seconds / 2 else (0.0, None)


def describe(check: Mapping[str, Any]) -> str:
    """One check in words: ``p99 41.2 ms [38.0, 47.9] > 40 ms budget: INCONCLUSIVE``."""
    if check["name"] == "errors":
        return f"{check['value']} requests failed"
    if check["name"] == "throughput":
        return f"throughput {check['value']:.1f} img/s below the {check['limit']:g} img/s budget"
    low, high = check["interval"]
    span = f"[{_ms(low)}, {_ms(high)}]"
    if check["outcome"] == "inconclusive" and high is None:
        return f"p99 {_ms(check['value'])} ms {span}: too few requests to bound the p99 from above (raise --max-point-seconds)"
    word = "straddles" if check["outcome"] == "inconclusive" else "is over"
    return f"p99 {_ms(check['value'])} ms, 95 % interval {span}, {word} the {check['limit']:g} ms budget ({check['outcome'].upper()})"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def score(point: Mapping[str, Any], objective: str) -> tuple:
    """A sort key, larger is better: points meeting the budgets first, ranked by ``objective``; then the others by
    how close they come (lowest p99 upper bound, then throughput)."""
    throughput = point.get("throughput") or 0.0
    p99 = point.get("p99_ms") if point.get("p99_ms") is not None else float("inf")
    if not point.get("judgement", {}).get("meets"):
        high = (point.get("p99_interval_ms") or [None, None])[1]
        return (0, -(high if high is not None else p99), throughput)
    if objective == "latency":
        return (1, -p99, throughput)
    if objective == "cost":
        return (1, -point["serving"]["cores"], throughput)
    return (1, throughput, -p99)


def objective_value(point: Mapping[str, Any], objective: str) -> float:
    """The figure the objective ranks by (images/s, p99 ms, or cores)."""
    return {"throughput": point.get("throughput"), "latency": point.get("p99_ms"), "cost": point["serving"]["cores"]}[objective]


def margin(chosen: Mapping[str, Any], runner_up: Optional[Mapping[str, Any]], objective: str) -> Optional[dict[str, Any]]:
    """How far the chosen point is ahead of the runner-up on the objective (and on throughput, which every objective
    shows): ratios > 1 mean the chosen is better."""
    if runner_up is None:
        return None
    out: dict[str, Any] = {"objective": objective}
    a, b = chosen.get("throughput") or 0.0, runner_up.get("throughput") or 0.0
    out["throughput_ratio"] = a / b if b else None
    pa, pb = chosen.get("p99_ms"), runner_up.get("p99_ms")
    out["p99_ratio"] = pb / pa if pa and pb else None  # > 1: the chosen answers faster
    if objective == "cost":
        out["cores_saved"] = runner_up["serving"]["cores"] - chosen["serving"]["cores"]
    return out


SCREEN = 0.10
"""How far behind the best point that meets the budgets a point may be and still be measured longer (10 %)."""


def could_win(point: Mapping[str, Any], best: Optional[Mapping[str, Any]], objective: str) -> bool:
    """Whether ``point`` (its first, short run) is close enough to ``best`` (the best point meeting the budgets so
    far; None: none yet) on ``objective`` that deciding its p99 budget could change the answer."""
    if best is None:
        return True
    throughput, leader = point.get("throughput") or 0.0, best.get("throughput") or 0.0
    if objective == "latency":
        return point.get("p99_ms") is not None and point["p99_ms"] <= (best.get("p99_ms") or 0.0) * (1 + SCREEN)
    if objective == "cost" and point["serving"]["cores"] != best["serving"]["cores"]:
        return point["serving"]["cores"] < best["serving"]["cores"]
    return throughput >= leader * (1 - SCREEN)
