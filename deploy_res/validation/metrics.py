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

Every metric is computed from a :class:`MetricState`: counts, extrema and
exact sums of per-sample values, built batch by batch (:meth:`MetricState.of`)
and merged in any order (:meth:`MetricState.merge`). Sums are exact (rational)
and rounded once in :meth:`MetricState.finalize`, so validation sharded over
many workers gives the same numbers, bit for bit, as one process on the same
batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Optional

import numpy as np


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)


def compare(reference: np.ndarray, artifact: np.ndarray) -> dict[str, Any]:
    """Error metrics of ``artifact`` against ``reference`` (both [N, ...] of equal shape)."""
    return MetricState.of(reference, artifact).finalize()[0]


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` largest scores, largest first (ties: lower index first)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _hits(truth: np.ndarray, top: np.ndarray) -> tuple[int, int]:
    """How many rows have ``truth`` at top-1, and anywhere in ``top``."""
    return int(np.count_nonzero(top[:, 0] == truth)), int(np.count_nonzero((top == truth[:, None]).any(axis=1)))


@dataclass
class MetricState:
    """Mergeable partial results of :func:`compare` and :func:`accuracy_block` over some samples.

    Holds counts, maxima/minima and exact sums (``Fraction``) of per-sample
    values: ``merge`` is associative and commutative, so any split of the
    samples into batches and shards, merged in any order, finalises to the
    same numbers as long as each sample's outputs are the same.
    """

    samples: int = 0
    elements: int = 0
    nonfinite: int = 0
    max_abs_error: float = 0.0
    max_abs_reference: float = 0.0
    abs_error_sum: Fraction = field(default_factory=Fraction)  # sum over samples of each sample's fsum of |error|
    cosine_sum: Fraction = field(default_factory=Fraction)
    cosine_min: float = math.inf
    classes: int = 0  # output size per sample (agreement needs > 1)
    top1_agree: int = 0
    top5_agree: int = 0
    labelled: int = 0
    max_label: int = -1
    reference_top1: int = 0
    reference_top5: int = 0
    artifact_top1: int = 0
    artifact_top5: int = 0

    @classmethod
    def of(cls, reference: np.ndarray, artifact: np.ndarray, labels: Optional[np.ndarray] = None) -> "MetricState":
        """The state of one batch: ``reference`` and ``artifact`` [N, ...], optional integer ``labels`` [N]."""
        ref, got = _flat(reference), _flat(artifact)
        finite = np.isfinite(got)
        diff = np.abs(np.where(finite, got, 0.0) - ref)
        clean = np.nan_to_num(got)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(clean, axis=1)
        cosine = np.where(norms > 0, np.sum(ref * clean, axis=1) / np.maximum(norms, 1e-300), 1.0)
        state = cls(
            samples=int(ref.shape[0]),
            elements=int(ref.size),
            nonfinite=int(got.size - np.count_nonzero(finite)),
            max_abs_error=float(diff.max()) if diff.size else 0.0,
            max_abs_reference=float(np.max(np.abs(ref))) if ref.size else 0.0,
            abs_error_sum=sum((Fraction(math.fsum(row)) for row in diff), Fraction()),
            cosine_sum=sum((Fraction(float(c)) for c in cosine), Fraction()),
            cosine_min=float(cosine.min()) if cosine.size else math.inf,
            classes=int(ref.shape[1]),
        )
        if ref.shape[1] > 1 and ref.shape[0]:
            k = min(5, ref.shape[1])
            got_top = _topk(np.nan_to_num(got, nan=-np.inf), k)
            state.top1_agree, state.top5_agree = _hits(ref.argmax(axis=1), got_top)
            if labels is not None:
                labels = np.asarray(labels, dtype=np.int64)
                state.labelled, state.max_label = int(labels.shape[0]), int(labels.max())
                state.reference_top1, state.reference_top5 = _hits(labels, _topk(np.nan_to_num(ref, nan=-np.inf), k))
                state.artifact_top1, state.artifact_top5 = _hits(labels, got_top)
        return state

    def merge(self, other: "MetricState") -> "MetricState":
        """A new state over both states' samples."""
        if self.samples and other.samples and self.classes != other.classes:
            raise ValueError(f"cannot merge states of {self.classes} and {other.classes} outputs per sample")
        return MetricState(
            samples=self.samples + other.samples,
            elements=self.elements + other.elements,
            nonfinite=self.nonfinite + other.nonfinite,
            max_abs_error=max(self.max_abs_error, other.max_abs_error),
            max_abs_reference=max(self.max_abs_reference, other.max_abs_reference),
            abs_error_sum=self.abs_error_sum + other.abs_error_sum,
            cosine_sum=self.cosine_sum + other.cosine_sum,
            cosine_min=min(self.cosine_min, other.cosine_min),
            classes=self.classes or other.classes,
            top1_agree=self.top1_agree + other.top1_agree,
            top5_agree=self.top5_agree + other.top5_agree,
            labelled=self.labelled + other.labelled,
            max_label=max(self.max_label, other.max_label),
            reference_top1=self.reference_top1 + other.reference_top1,
            reference_top5=self.reference_top5 + other.reference_top5,
            artifact_top1=self.artifact_top1 + other.artifact_top1,
            artifact_top5=self.artifact_top5 + other.artifact_top5,
        )

    @classmethod
    def merged(cls, states) -> "MetricState":
        """All ``states`` merged (an empty state for none)."""
        total = cls()
        for state in states:
            total = total.merge(state)
        return total

    def finalize(self) -> tuple[dict[str, Any], Optional[dict[str, float]]]:
        """``(compare metrics, accuracy block or None)``: every sum rounded once, here."""
        n = self.samples
        metrics: dict[str, Any] = {
            "max_abs_error": self.max_abs_error,
            "mean_abs_error": float(self.abs_error_sum / self.elements) if self.elements else 0.0,
            "max_rel_error": self.max_abs_error / self.max_abs_reference if self.elements and self.max_abs_reference > 0 else 0.0,
            "cosine_mean": float(self.cosine_sum / n) if n else math.nan,
            "cosine_min": self.cosine_min if n else math.nan,
            "nonfinite": self.nonfinite,
            "samples": n,
        }
        if self.classes > 1:
            metrics["top1_agreement"] = self.top1_agree / n
            metrics["top5_agreement"] = self.top5_agree / n
        accuracy = None
        if self.labelled and self.classes > 1:
            ref1, got1 = self.reference_top1 / self.labelled, self.artifact_top1 / self.labelled
            accuracy = {
                "reference_top1": ref1, "artifact_top1": got1,
                "reference_top5": self.reference_top5 / self.labelled, "artifact_top5": self.artifact_top5 / self.labelled,
                "top1_drop_points": 100.0 * (ref1 - got1),
            }
        return metrics, accuracy


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
    return MetricState.of(reference, artifact, labels).finalize()[1]
