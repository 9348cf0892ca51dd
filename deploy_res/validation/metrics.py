"""Numbers that say how far an engine's outputs are from the reference's.

All errors compare ``artifact`` against ``reference`` sample by sample:

- ``max_abs_error`` / ``mean_abs_error``: over all elements;
- ``max_rel_error``: ``max |a - r| / max |r|``, relative to the largest
  reference magnitude (elementwise ratios explode near zero logits);
- ``cosine_mean`` / ``cosine_min`` / ``cosine_p1`` / ``cosine_p5``: the mean, the smallest, and the 1st / 5th
  percentile of the cosine similarity of each sample's output vector with the reference's;
- ``top1_agreement`` / ``top5_agreement``: share of samples whose reference
  top-1 class is the artifact's top-1 (resp. within the artifact's top-5);
- ``nonfinite``: NaN or Inf values in the artifact's output (always a failure).

Every metric is computed from a :class:`MetricState`: counts, extrema, exact sums and the sorted per-sample
cosines, built batch by batch (:meth:`MetricState.of`) and merged in any order (:meth:`MetricState.merge`).
Sums are exact (rational, or ``math.fsum`` over sorted values) and rounded once in
:meth:`MetricState.finalize`, so validation sharded over many workers gives the same numbers, bit for bit, as
one process on the same batches. With labels the state also holds the paired 2x2 tables (:meth:`MetricState.table`)
that :mod:`.intervals` turns into the interval of the accuracy drop; :attr:`MetricState.worst` keeps the
:data:`WORST_KEPT` samples of lowest cosine as evidence (never as a limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Optional, Sequence

import numpy as np

from deploy_res.core.intervals import quantile

WORST_KEPT = 5
"""Samples of lowest cosine a state keeps, with their names and classes, as evidence."""


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


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two per-class count arrays added (either may be empty: a state with no samples)."""
    if not a.size or not b.size:
        return (a if a.size else b).copy()
    return a + b


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
    cosines: np.ndarray = field(default_factory=lambda: np.empty(0))  # every sample's cosine, sorted
    worst: tuple = ()  # the WORST_KEPT samples of lowest cosine: dicts of name, cosine, classes
    classes: int = 0  # output size per sample (agreement needs > 1)
    top1_agree: int = 0
    top5_agree: int = 0
    labelled: int = 0
    max_label: int = -1
    reference_top1: int = 0
    reference_top5: int = 0
    artifact_top1: int = 0
    artifact_top5: int = 0
    top1_reference_only: int = 0  # labelled samples the reference gets right at top-1 and the artifact does not
    top1_artifact_only: int = 0
    top5_reference_only: int = 0
    top5_artifact_only: int = 0
    class_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # samples per reference top-1 class
    class_agree: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # of those, the artifact's top-1 agrees

    @classmethod
    def of(cls, reference: np.ndarray, artifact: np.ndarray, labels: Optional[np.ndarray] = None,
           names: Optional[Sequence[str]] = None) -> "MetricState":
        """The state of one batch: ``reference`` and ``artifact`` [N, ...], optional integer ``labels`` [N] and
        sample ``names`` [N] (default: none; the worst samples are then named by their index in the batch)."""
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
            cosines=np.sort(cosine.astype(np.float64)),
            classes=int(ref.shape[1]),
        )
        scores = np.nan_to_num(got, nan=-np.inf)
        order = np.argsort(cosine, kind="stable")[:WORST_KEPT]
        state.worst = tuple(_evidence(cosine[i], names[i] if names is not None else f"#{i}", ref[i], scores[i]) for i in order)
        if ref.shape[1] > 1 and ref.shape[0]:
            k = min(5, ref.shape[1])
            got_top = _topk(scores, k)
            reference_class = ref.argmax(axis=1)
            state.top1_agree, state.top5_agree = _hits(reference_class, got_top)
            state.class_samples = np.bincount(reference_class, minlength=ref.shape[1]).astype(np.int64)
            state.class_agree = np.bincount(reference_class[got_top[:, 0] == reference_class], minlength=ref.shape[1]).astype(np.int64)
            if labels is not None:
                labels = np.asarray(labels, dtype=np.int64)
                ref_top = _topk(np.nan_to_num(ref, nan=-np.inf), k)
                state.labelled, state.max_label = int(labels.shape[0]), int(labels.max())
                state.reference_top1, state.reference_top5 = _hits(labels, ref_top)
                state.artifact_top1, state.artifact_top5 = _hits(labels, got_top)
                for depth, ref_hit, got_hit in ((1, ref_top[:, 0] == labels, got_top[:, 0] == labels),
                                                (5, (ref_top == labels[:, None]).any(axis=1), (got_top == labels[:, None]).any(axis=1))):
                    setattr(state, f"top{depth}_reference_only", int(np.count_nonzero(ref_hit & ~got_hit)))
                    setattr(state, f"top{depth}_artifact_only", int(np.count_nonzero(got_hit & ~ref_hit)))
        return state

    def table(self, depth: str = "top1") -> tuple[int, int, int, int]:
        """The paired 2x2 table of the labelled samples at ``depth`` (``top1`` or ``top5``): how many both get right,
        only the reference, only the artifact, neither."""
        reference_right = getattr(self, f"reference_{depth}")
        reference_only, artifact_only = getattr(self, f"{depth}_reference_only"), getattr(self, f"{depth}_artifact_only")
        both = reference_right - reference_only
        return both, reference_only, artifact_only, self.labelled - both - reference_only - artifact_only

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
            cosines=np.sort(np.concatenate((self.cosines, other.cosines))),
            worst=tuple(sorted(self.worst + other.worst, key=lambda w: (w["cosine"], w["sample"]))[:WORST_KEPT]),
            classes=self.classes or other.classes,
            top1_agree=self.top1_agree + other.top1_agree,
            top5_agree=self.top5_agree + other.top5_agree,
            labelled=self.labelled + other.labelled,
            max_label=max(self.max_label, other.max_label),
            reference_top1=self.reference_top1 + other.reference_top1,
            reference_top5=self.reference_top5 + other.reference_top5,
            artifact_top1=self.artifact_top1 + other.artifact_top1,
            artifact_top5=self.artifact_top5 + other.artifact_top5,
            top1_reference_only=self.top1_reference_only + other.top1_reference_only,
            top1_artifact_only=self.top1_artifact_only + other.top1_artifact_only,
            top5_reference_only=self.top5_reference_only + other.top5_reference_only,
            top5_artifact_only=self.top5_artifact_only + other.top5_artifact_only,
            class_samples=_add(self.class_samples, other.class_samples),
            class_agree=_add(self.class_agree, other.class_agree),
        )

    def worst_classes(self, count: int = 5) -> list[dict[str, Any]]:
        """The ``count`` reference top-1 classes whose samples the artifact agrees with least: ``class``, ``samples``,
        ``agreement`` (lowest agreement first; ties: more samples first, then the lower class index)."""
        seen = np.flatnonzero(self.class_samples)
        rows = [{"class": int(c), "samples": int(self.class_samples[c]), "agreement": float(self.class_agree[c] / self.class_samples[c])}
                for c in seen]
        return sorted(rows, key=lambda row: (row["agreement"], -row["samples"], row["class"]))[:count]

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
            "cosine_mean": math.fsum(self.cosines) / n if n else math.nan,
            "cosine_min": float(self.cosines[0]) if n else math.nan,
            "cosine_p1": quantile(self.cosines, 0.01),
            "cosine_p5": quantile(self.cosines, 0.05),
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
                "top5_drop_points": 100.0 * (self.reference_top5 - self.artifact_top5) / self.labelled,
            }
        return metrics, accuracy


def _evidence(cosine: float, name: str, reference: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """One worst sample as the result shows it: its name, cosine, both top-1 classes, and the rank (1 = first) the
    artifact gives the reference's top-1 class."""
    reference_class = int(np.argmax(reference)) if reference.size else 0
    return {"sample": str(name), "cosine": float(cosine), "reference_class": reference_class,
            "artifact_class": int(np.argmax(scores)) if scores.size else 0,
            "reference_class_rank": int(np.count_nonzero(scores > scores[reference_class])) + 1 if scores.size else 1}


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
