"""The intervals behind every statistical verdict: their coverage, checked by simulation, and their edges."""

from __future__ import annotations

import numpy as np
import pytest

from deploy_res.core import intervals
from deploy_res.validation.checks import evaluate, verdict
from deploy_res.validation.metrics import MetricState


@pytest.mark.parametrize("n, reference_only, artifact_only", [(300, 0.04, 0.02), (3000, 0.03, 0.024), (1000, 0.01, 0.01)])
def test_paired_drop_interval_covers_a_known_drop(n, reference_only, artifact_only):
    """Many resamples of two classifiers whose true top-1 drop is known: the 95 % interval holds it about 95 % of
    the time (at least 94 %; Bonett-Price is slightly conservative where discordance is rare)."""
    rng = np.random.default_rng(0)
    truth = reference_only - artifact_only
    tables = rng.multinomial(n, [0.8 - reference_only, reference_only, artifact_only, 0.2 - artifact_only], size=2000)
    covered = [low <= truth <= high for low, high in (intervals.paired_difference_interval(*t) for t in tables)]
    assert 0.94 <= np.mean(covered) <= 0.99


def test_wilson_and_quantile_intervals_cover():
    rng = np.random.default_rng(1)
    agree = rng.binomial(400, 0.93, size=2000)
    assert 0.93 <= np.mean([lo <= 0.93 <= hi for lo, hi in (intervals.proportion_interval(k, 400) for k in agree)]) <= 0.97
    true_p5 = np.quantile(rng.beta(30, 1, size=2_000_000), 0.05)
    hits = [low <= true_p5 <= high for low, high in (intervals.quantile_interval(rng.beta(30, 1, size=500), 0.05) for _ in range(1000))]
    assert np.mean(hits) >= 0.94


def test_a_quantile_the_data_cannot_bound_is_open():
    assert intervals.quantile_ranks(32, 0.05) == (None, 5)  # 32 samples cannot bound the 5th percentile from below
    low, high = intervals.quantile_interval(np.linspace(0.9, 1, 32), 0.05)
    assert low is None and high == pytest.approx(0.9 + 4 * 0.1 / 31)
    assert intervals.quantile_ranks(72, 0.05)[0] == 1  # from 72 samples the smallest does


def test_no_discordant_pair_still_has_an_honest_width():
    low, high = intervals.paired_difference_interval(28, 0, 0, 4)
    assert low < -0.05 and high > 0.05  # 32 samples: one image is 3.1 points
    assert intervals.paired_difference_interval(2800, 0, 0, 200)[1] < 0.002


def _state(n, agree_share, seed=0):
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((n, 10))
    artifact = reference + rng.standard_normal((n, 10)) * 0.05
    flip = rng.random(n) > agree_share
    artifact[flip] = -artifact[flip]
    return MetricState.of(reference, artifact)


def test_samples_to_decide_does_decide():
    limits = {"top1_agreement": 0.85}
    state = _state(60, 0.92)
    metrics, _ = state.finalize()
    checks = evaluate(state, metrics, None, limits)
    assert verdict(checks) == "inconclusive"
    needed = checks[1]["samples_to_decide"]
    assert needed and needed > 60
    bigger = _state(needed * 2, 0.92, seed=3)
    assert verdict(evaluate(bigger, bigger.finalize()[0], None, limits)) == "pass"


def test_outcome_sides():
    assert intervals.outcome((0.1, 0.9), 1.0, upper_bound=True) == "pass"
    assert intervals.outcome((1.1, 2.0), 1.0, upper_bound=True) == "fail"
    assert intervals.outcome((0.5, 1.5), 1.0, upper_bound=True) == "inconclusive"
    assert intervals.outcome((None, 0.99), 0.9, upper_bound=False) == "inconclusive"
    assert intervals.outcome((None, 0.8), 0.9, upper_bound=False) == "fail"
