"""The search's two economies. Successive halving across engines: an engine whose best corner is over SCREEN behind
the best point another engine has that meets the budgets is not hill-climbed; the leader's engine and engines close
to it are. Serving longer: an undecided p99 is served for the requests its interval's width says would decide it,
and not at all when that is more than --max-point-seconds gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy_res.tune.judge import BOUNDING_REQUESTS, judge, latency_figures, requests_to_decide, serve_longer, undecided
from deploy_res.tune.search import _screened_out
from deploy_res.tune.settings import TuneSettings
from deploy_res.tune.space import Serving

SERVING = Serving(instances=1, threads=2, max_batch=4, queue_delay_us=0)


def _run(throughput: float, p99_scale: float = 10.0, requests: int = 2000, seed: int = 0) -> dict:
    latencies = list(np.random.default_rng(seed).lognormal(np.log(p99_scale / 2), 0.3, requests))
    return {"latencies_ms": latencies, "throughput": throughput, "errors": 0, "first_error": None, "samples_per_execution": 1.0,
            "batch_sizes": {}, "memory_mib": 100.0, "memory_of": "test", "seconds": requests / throughput, "requests": requests}


def _state(**engines: dict) -> dict:
    return {"points": {f"{name}|{SERVING.key}": [run] for name, run in engines.items()}, "finals": {}}


def test_an_engine_far_behind_the_leader_is_not_climbed():
    settings = TuneSettings(data=Path("heldout.npz"), p99_ms=100.0)
    state = _state(fast=_run(100.0), slow=_run(85.0, seed=1))
    assert _screened_out(state, "fast", settings) is None  # the leader's own engine
    line = _screened_out(state, "slow", settings)
    assert line and line.startswith("slow not searched further: its best corner (85.0) is over 10% behind fast") and "(100.0)" in line


def test_an_engine_close_to_the_leader_or_without_a_leader_is_climbed():
    settings = TuneSettings(data=Path("heldout.npz"), p99_ms=100.0)
    assert _screened_out(_state(fast=_run(100.0), close=_run(92.0, seed=1)), "close", settings) is None
    # no point meets the p99 budget (every p99 over it): nothing leads, every engine is searched
    impossible = TuneSettings(data=Path("heldout.npz"), p99_ms=1.0)
    assert _screened_out(_state(fast=_run(100.0), slow=_run(50.0, seed=1)), "slow", impossible) is None
    # a slower engine whose corner misses the budget is judged on throughput all the same: far behind, not climbed
    assert _screened_out(_state(fast=_run(100.0), slow=_run(50.0, p99_scale=500.0, seed=1)), "slow", settings)


def _lognormal(n: int, rng) -> list:
    return list(rng.lognormal(np.log(5.0), 0.3, n))


TRUE_P99 = float(np.exp(np.log(5.0) + 0.3 * 2.3263))
"""The 99th percentile of those latencies (ms)."""


def test_requests_to_decide_grow_as_the_p99_nears_the_budget():
    rng = np.random.default_rng(0)
    few = latency_figures(_lognormal(100, rng))  # no upper side yet: at least twice the bounding requests
    assert few["p99_interval_ms"][1] is None and requests_to_decide(few, 10.0) == 2 * BOUNDING_REQUESTS
    point = latency_figures(_lognormal(2000, rng))
    assert requests_to_decide(point, point["p99_ms"]) == float("inf")
    near, far = requests_to_decide(point, point["p99_ms"] * 1.02), requests_to_decide(point, point["p99_ms"] * 1.2)
    assert near > far >= 2 * BOUNDING_REQUESTS


def test_the_forecast_decides_most_budgets_it_is_given_the_requests_for():
    """Served 1.2x the forecast (as the search does), a fresh sample decides the budget in most trials: the forecast is
    neither wildly short (serving in vain) nor wildly long (a point dropped that could have been decided)."""
    rng = np.random.default_rng(1)
    for factor in (0.95, 1.05):
        budget, decided = TRUE_P99 * factor, 0
        for _ in range(30):
            need = requests_to_decide(latency_figures(_lognormal(1000, rng)), budget)
            again = latency_figures(_lognormal(int(1.2 * need), rng))
            decided += judge(again, budget, None)["checks"][0]["outcome"] != "inconclusive"
        assert decided >= 15, (factor, decided)


def _judged(run: dict, budget: float) -> dict:
    point = {**latency_figures(run["latencies_ms"]), "errors": 0, "throughput": run["throughput"]}
    return {**point, "judgement": judge(point, budget, None)}


def test_serve_longer_asks_for_the_time_that_would_decide_the_p99():
    short = _run(100.0, requests=100)  # 1 s at 100 img/s: too few requests to bound the p99 from above
    point = _judged(short, 1000.0)
    assert undecided(point)
    longer, why_not = serve_longer(point, [short], 1000.0, seconds=3.0, max_seconds=60.0)
    assert why_not is None and abs(longer - (1.2 * 2 * BOUNDING_REQUESTS - 100) / 100.0) < 1e-9  # 1.2 x the forecast at 100 req/s
    nothing, why_not = serve_longer(point, [short], 1000.0, seconds=3.0, max_seconds=4.0)  # 6.4 s needed, 3 s left
    assert nothing == 0.0 and "about 736 requests would decide it, more than --max-point-seconds 4 gives" in why_not
