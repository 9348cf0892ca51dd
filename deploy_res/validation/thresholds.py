"""Default pass/fail limits per precision; every one can be overridden.

- ``fp32``: the engine must compute what PyTorch computes up to float
  reassociation: max error <= 1e-3 of the largest logit, cosine >= 0.99999,
  every top-1 the same.
- ``fp16``: max error <= 3e-2 of the largest logit, cosine >= 0.999,
  top-1 agreement >= 0.98.
- ``bf16`` (OpenVINO on CPUs with AVX512_BF16 or AMX; 8 mantissa bits
  against FP16's 11, so between FP16's limits and INT8's): max error <= 5e-2
  of the largest logit, cosine >= 0.998, top-1 agreement >= 0.95, top-1
  accuracy at most 0.75 points below the reference. Measured on 64 held-out
  photo crops (BatchNorm re-estimated on photos, OpenVINO 2026.4.1, Xeon with
  AMX): max error 0.0087 / 0.0141, worst cosine 0.99995 / 0.99979 for
  resnet18 / resnet50; the digits-trained ResNet: see README.
- ``int8``: judged on agreement and accuracy, not elementwise error: mean
  cosine >= 0.98, worst-sample cosine >= 0.95, top-1 agreement >= 0.90; with
  labels, top-1 accuracy at most 1 point below the reference.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from deploy_res.core.numerics import VALIDATION_LIMITS

DEFAULTS = VALIDATION_LIMITS
"""The default limits per precision; they live with every other tolerance in :mod:`deploy_res.core.numerics`."""
LIMIT_NAMES = tuple(DEFAULTS["fp32"])
"""The limits a validation can be given: ``max_rel_error``, ``cosine_mean``, ``cosine_min``, ``top1_agreement``, ``top1_drop_points``."""
UPPER_BOUNDS = ("max_rel_error", "top1_drop_points")
"""Limits a value must stay at or below; all others are lower bounds."""


def thresholds_for(precision: str, overrides: Mapping[str, Optional[float]] | None = None) -> dict[str, Optional[float]]:
    """The limits for ``precision`` with ``overrides`` applied (None disables a check)."""
    limits = dict(DEFAULTS.get(precision, DEFAULTS["fp32"]))
    for key, value in (overrides or {}).items():
        if key not in limits:
            raise KeyError(key)
        limits[key] = value
    return limits


def evaluate(metrics: Mapping[str, Any], accuracy: Optional[Mapping[str, float]], limits: Mapping[str, Optional[float]]) -> list[dict[str, Any]]:
    """One check per limit that applies: name, value, limit, passed. NaN/Inf always fails."""
    checks = [{"name": "finite", "value": metrics["nonfinite"], "limit": 0, "passed": metrics["nonfinite"] == 0}]
    values = dict(metrics)
    if accuracy:
        values["top1_drop_points"] = accuracy["top1_drop_points"]
    for name, limit in limits.items():
        if limit is None or name not in values:
            continue
        value = values[name]
        passed = value <= limit if name in UPPER_BOUNDS else value >= limit
        checks.append({"name": name, "value": value, "limit": limit, "passed": bool(passed)})
    return checks
