"""The latency budget is judged on the p99's interval: a point whose interval straddles the budget does not meet it."""

from __future__ import annotations

import numpy as np

from deploy_res.tune.judge import judge, latency_figures, margin, score


def _point(latencies, throughput=100.0, errors=0, cores=2):
    return {**latency_figures(latencies), "throughput": throughput, "errors": errors, "serving": {"cores": cores}}


def _latencies(n=5000, seed=0):
    return list(np.random.default_rng(seed).lognormal(np.log(5.0), 0.3, n))


def test_interval_wholly_below_the_budget_meets_it():
    point = _point(_latencies())
    low, high = point["p99_interval_ms"]
    assert low <= point["p99_ms"] <= high
    assert judge(point, p99_ms=high * 1.01, min_throughput=None)["meets"]


def test_interval_straddling_the_budget_does_not_meet_it():
    point = _point(_latencies())
    low, high = point["p99_interval_ms"]
    budget = (point["p99_ms"] + high) / 2  # the estimate is below the budget, the interval's top is not
    assert point["p99_ms"] < budget < high
    result = judge(point, p99_ms=budget, min_throughput=None)
    assert not result["meets"] and result["checks"][0]["outcome"] == "inconclusive" and "straddles" in result["failed"]
    assert judge(point, p99_ms=low * 0.9, min_throughput=None)["checks"][0]["outcome"] == "fail"


def test_too_few_requests_cannot_bound_a_p99():
    point = _point(_latencies(n=200))
    assert point["p99_interval_ms"][1] is None
    result = judge(point, p99_ms=1e6, min_throughput=None)
    assert not result["meets"] and "too few requests" in result["failed"]


def test_throughput_budget_and_errors():
    point = _point(_latencies(), throughput=90.0)
    assert not judge(point, None, min_throughput=100.0)["meets"]
    assert judge(point, None, min_throughput=80.0)["meets"]
    assert not judge(_point(_latencies(), errors=3), None, None)["meets"]
    assert judge(point, None, None)["meets"]  # no budgets: every answered point meets them


def test_objectives_rank_points_that_meet_the_budgets_first():
    fast = _point(_latencies(seed=1), throughput=200.0, cores=2)
    slow_cheap = _point(_latencies(seed=2), throughput=120.0, cores=1)
    failing = _point(_latencies(seed=3), throughput=900.0, cores=2)
    for p, meets in ((fast, True), (slow_cheap, True), (failing, False)):
        p["judgement"] = {"meets": meets}
    assert max([fast, slow_cheap, failing], key=lambda p: score(p, "throughput")) is fast
    assert max([fast, slow_cheap, failing], key=lambda p: score(p, "cost")) is slow_cheap
    assert margin(fast, slow_cheap, "throughput")["throughput_ratio"] == 200.0 / 120.0
