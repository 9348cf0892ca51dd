"""Percentiles and summaries against known samples (numpy's linear interpolation)."""

from __future__ import annotations

import numpy as np
import pytest

from deploy_res.profiling.stats import percentile, summarize


@pytest.mark.parametrize("q, expected", [(0, 1.0), (50, 50.5), (90, 90.1), (95, 95.05), (99, 99.01), (100, 100.0), (25, 25.75)])
def test_percentiles_of_1_to_100(q, expected):
    samples = list(range(1, 101))
    assert percentile(samples, q) == pytest.approx(expected)
    assert percentile(samples, q) == pytest.approx(np.percentile(samples, q))


def test_percentiles_match_numpy_on_unsorted_random_samples():
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 257):
        samples = rng.lognormal(1.0, 0.5, n).tolist()
        for q in (0, 1, 37.5, 50, 90, 95, 99, 100):
            assert percentile(samples, q) == pytest.approx(np.percentile(samples, q))


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_fields_and_throughput():
    summary = summarize([1.0, 2.0, 3.0, 4.0], batch=8)
    assert summary["iterations"] == 4
    assert summary["mean_ms"] == pytest.approx(2.5)
    assert summary["std_ms"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert (summary["min_ms"], summary["max_ms"]) == (1.0, 4.0)
    assert summary["p50_ms"] == pytest.approx(2.5)
    assert summary["p99_ms"] == pytest.approx(np.percentile([1, 2, 3, 4], 99))
    assert summary["throughput"] == pytest.approx(8 * 4 / 0.010)  # 32 samples in 10 ms
    assert summarize([5.0])["std_ms"] == 0.0
