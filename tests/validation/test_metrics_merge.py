"""MetricState: any split of the samples into batches, merged in any order, gives the same numbers bit for bit."""

from __future__ import annotations

import numpy as np

from deploy_res.validation.metrics import MetricState, accuracy, accuracy_block, compare


def _data(seed=0, n=203, classes=50):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n, classes)).astype(np.float32)
    got = (ref + rng.standard_normal((n, classes)).astype(np.float32) * 0.05).astype(np.float32)
    got[17, 3] = np.nan
    got[90, 0] = np.inf
    labels = rng.integers(0, classes, n)
    return ref, got, labels


def test_any_split_any_order_same_numbers():
    ref, got, labels = _data()
    whole = MetricState.of(ref, got, labels).finalize()
    rng = np.random.default_rng(1)
    for _ in range(5):
        cuts = np.sort(rng.choice(np.arange(1, len(ref)), size=rng.integers(1, 30), replace=False))
        parts = [MetricState.of(r, g, l) for r, g, l in zip(np.split(ref, cuts), np.split(got, cuts), np.split(labels, cuts))]
        order = rng.permutation(len(parts))
        merged = MetricState.merged(parts[i] for i in order).finalize()
        assert merged == whole  # exact equality, dicts of floats and ints
        halves = MetricState.merged(parts[: len(parts) // 2]).merge(MetricState.merged(parts[len(parts) // 2:]))
        assert halves.finalize() == whole


def test_state_matches_the_direct_definitions():
    ref, got, labels = _data(2)
    metrics, acc = MetricState.of(ref, got, labels).finalize()
    r, g = ref.astype(np.float64), got.astype(np.float64)
    finite = np.isfinite(g)
    diff = np.abs(np.where(finite, g, 0.0) - r)
    assert metrics["nonfinite"] == 2 and metrics["max_abs_error"] == diff.max()
    np.testing.assert_allclose(metrics["mean_abs_error"], diff.mean(), rtol=1e-12)
    assert metrics["max_rel_error"] == diff.max() / np.abs(r).max()
    assert metrics["top1_agreement"] == np.mean(np.nan_to_num(g, nan=-np.inf).argmax(1) == r.argmax(1))
    assert acc == accuracy_block(ref, got, labels)
    assert acc["reference_top1"] == accuracy(ref, labels)["top1"] and acc["artifact_top5"] == accuracy(got, labels)["top5"]
    assert compare(ref, got) == metrics
    assert MetricState.of(ref, got).finalize()[1] is None  # no labels, no accuracy block
