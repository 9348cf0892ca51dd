"""Numbers that say how far an engine's outputs are from the reference's.

All errors compare ``artifact`` against ``reference`` sample by sample:

- ``max_abs_error`` / ``mean_abs_error``: over all elements;
- ``max_rel_error``: ``max |a - r| / max |r|``, relative to the largest
  reference magnitude (elementwise ratios explode near zero logits);
- ``cosine_mean`` / ``cosine_min``: cosine similarity of each sample's output
  vector with the reference's;
- ``top1_agreement`` / ``top5_agreement``: share of samples whose reference
  top-1 class is the artifact's top-1 (resp. within the artifact's top-5);
- ``nonfinite``: NaN or Inf values in the artifact's output (always a failure).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)


def compare(reference: np.ndarray, artifact: np.ndarray) -> dict[str, Any]:
    """Error metrics of ``artifact`` against ``reference`` (both [N, ...] of equal shape)."""
    ref, got = _flat(reference), _flat(artifact)
    nonfinite = int(np.size(got) - np.count_nonzero(np.isfinite(got)))
    diff = np.abs(np.where(np.isfinite(got), got, 0.0) - ref)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(np.nan_to_num(got), axis=1)
    cosine = np.where(norms > 0, np.sum(ref * np.nan_to_num(got), axis=1) / np.maximum(norms, 1e-300), 1.0)
    metrics = {
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "max_rel_error": float(diff.max() / scale) if diff.size and scale > 0 else 0.0,
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "nonfinite": nonfinite,
        "samples": int(ref.shape[0]),
    }
    if ref.shape[1] > 1:
        ref_top1 = ref.argmax(axis=1)
        got_clean = np.nan_to_num(got, nan=-np.inf)
        metrics["top1_agreement"] = float(np.mean(got_clean.argmax(axis=1) == ref_top1))
        k = min(5, ref.shape[1])
        top5 = np.argsort(-got_clean, axis=1)[:, :k]
        metrics["top5_agreement"] = float(np.mean([r in row for r, row in zip(ref_top1, top5)]))
    return metrics


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy (fractions) of ``logits`` [N, classes] against integer ``labels``."""
    scores = np.nan_to_num(_flat(logits), nan=-np.inf)
    k = min(5, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return {"top1": float(np.mean(top[:, 0] == labels)), "top5": float(np.mean([l in row for l, row in zip(labels, top)]))}


def accuracy_block(reference: np.ndarray, artifact: np.ndarray, labels: Optional[np.ndarray]) -> Optional[dict[str, float]]:
    """Both sides' accuracy and the top-1 difference in points, or None without labels."""
    if labels is None:
        return None
    ref, got = accuracy(reference, labels), accuracy(artifact, labels)
    return {
        "reference_top1": ref["top1"], "artifact_top1": got["top1"],
        "reference_top5": ref["top5"], "artifact_top5": got["top5"],
        "top1_drop_points": 100.0 * (ref["top1"] - got["top1"]),
    }
