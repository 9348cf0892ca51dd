"""Default limits per precision, and which kind of check each is; every limit can be overridden.

- ``fp32`` computes what PyTorch computes, up to float reassociation, so its limits apply to **every sample**
  (:mod:`.checks`): max error <= 1e-3 of the largest logit, every cosine >= 0.99999, every top-1 the same.
- ``fp16``, ``bf16`` and ``int8`` approximate the original, so their limits apply to **statistics of the
  population** the samples come from, judged by confidence intervals (:mod:`.intervals`), never to an extreme
  (the worst sample's cosine falls as samples are added, whatever the engine). With labels the verdict is the
  top-1 and top-5 accuracy drop (points, reference minus engine); without labels, the top-1 agreement with the
  reference, the mean cosine and the 5th percentile of the per-sample cosine (95 % of samples at or above it):

  | precision | top-1 / top-5 drop <= | top-1 agreement >= | mean cosine >= | cosine p5 >= |
  |---|---|---|---|---|
  | fp16 | 0.5 | 0.98 | 0.999 | 0.995 |
  | bf16 | 0.75 | 0.95 | 0.998 | 0.99 |
  | int8 | 1.5 | 0.90 | 0.96 | 0.85 |

  Chosen from ``benchmarks/verdict_limits.py`` (two networks trained here, good and damaged INT8 engines, FP16,
  BF16; README "Judging an engine" has the figures): every good engine's interval clears its limit on a few
  thousand samples, the damaged INT8 engine's top-1 drop (+8.2 points) and agreement (0.873) fail.

With labels the agreement limits of a reduced precision are reported, not judged, unless given explicitly.
"""

from __future__ import annotations

from typing import Mapping, Optional

from deploy_res.core.errors import DeployResError
from deploy_res.core.numerics import VALIDATION_LIMITS

DEFAULTS = VALIDATION_LIMITS
"""The default limits per precision; they live with every other tolerance in :mod:`deploy_res.core.numerics`."""
LIMIT_NAMES = ("max_rel_error", "cosine_min", "top1_agreement", "cosine_mean", "cosine_p5", "top1_drop_points", "top5_drop_points")
"""The limits a validation can be given."""
UPPER_BOUNDS = ("max_rel_error", "top1_drop_points", "top5_drop_points")
"""Limits a value must stay at or below; all others are lower bounds."""
EXTREMES = ("max_rel_error", "cosine_min")
"""Limits on the worst sample: judged on every sample, so only where every sample must match (``fp32``)."""
EXACT_PRECISIONS = ("fp32",)
LABEL_LIMITS = ("top1_drop_points", "top5_drop_points")
STATISTICS = {
    "top1_agreement": "Wilson score interval",
    "cosine_mean": "normal approximation (sd / sqrt(N))",
    "cosine_p5": "order statistics (distribution-free)",
    "top1_drop_points": "paired difference, Bonett-Price adjusted Wald",
    "top5_drop_points": "paired difference, Bonett-Price adjusted Wald",
}
"""How each statistical limit's interval is computed (:mod:`.intervals`)."""


def every_sample_limits(precision: str) -> frozenset[str]:
    """The limits judged on every sample for ``precision``: all of FP32's own, only the extremes elsewhere."""
    return frozenset(("max_rel_error", "cosine_min", "top1_agreement") if precision in EXACT_PRECISIONS else EXTREMES)


def thresholds_for(precision: str, overrides: Mapping[str, Optional[float]] | None = None, labelled: bool = False) -> dict[str, Optional[float]]:
    """The limits for ``precision`` with ``overrides`` applied (None disables a check). For a reduced precision
    ``labelled`` data is judged on the accuracy drops, so the agreement limits are left out unless overridden, and a
    limit on an extreme is refused (one line naming the statistic to use instead)."""
    overrides = dict(overrides or {})
    limits = dict.fromkeys(LIMIT_NAMES)
    limits.update(DEFAULTS.get(precision, DEFAULTS["fp32"]))
    exact = precision in EXACT_PRECISIONS
    for name in overrides:
        if name not in LIMIT_NAMES:
            raise KeyError(name)
        if not exact and name in EXTREMES and overrides[name] is not None:
            raise DeployResError(f"a {precision} engine is not judged on its worst sample ({name} falls as samples are added); "
                                 "limit the mean or 5th-percentile cosine (--min-mean-cosine, --min-cosine-p5) or the top-1 agreement instead")
    if labelled and not exact:
        limits = {name: value if name in LABEL_LIMITS else None for name, value in limits.items()}
    limits.update(overrides)
    return limits
