"""Successive halving across engines: an engine whose best corner is over SCREEN behind the best point another
engine has that meets the budgets is not hill-climbed; the leader's engine and engines close to it are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
