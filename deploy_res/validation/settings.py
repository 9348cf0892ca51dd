"""What a validation is told: :class:`ValidateSettings`, checked whole before any work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

from deploy_res.core.errors import DeployResError, require_at_least_one
from deploy_res.scale.options import RayOptions
from deploy_res.core.intervals import DEFAULT_CONFIDENCE
from deploy_res.validation.thresholds import LIMIT_NAMES

DEFAULT_RANDOM_SAMPLES = 32
"""Seeded random inputs compared when no data is given."""
DEFAULT_BATCH = 8


@dataclass(frozen=True)
class ValidateSettings:
    """One validation; every field has the command line's default.

    reference: a zoo name, ``package.module:factory`` or an FP32 .onnx to compare with
        (default None: the PyTorch model the artifact's manifest names).
    reference_weights: the checkpoint of ``reference`` (default None).
    data: an image folder (sub-folders = classes for accuracy), a glob, a .parquet list of paths, or .npy/.npz
        (default None: ``samples`` seeded random inputs, no accuracy).
    samples: inputs to compare, at most (default None: every sample of ``data``; 32 random inputs without it).
    batch: batch size of the runs (default 8).
    limits: ``{limit name: value or None}`` over the precision's defaults (default None: the precision's;
        names in :data:`deploy_res.validation.thresholds.LIMIT_NAMES`; None turns one off).
    confidence: the confidence level of every interval a statistical limit is judged by (default 0.95).
    seed: seed of the random inputs (default 0).
    per_layer: INT8: rank the quantised layers by the error they add (default False).
    skip_bad_files: skip images that fail to decode, naming them in the result (default False: stop).
    backend: run a plain ONNX artifact on ``onnxruntime`` or ``openvino`` (default None: ONNX Runtime;
        an engine runs on its own backend).
    ray: shard the batches over Ray Data actors (default None: in this process).
    any_batch: run outside the batch range the manifest records (default False; :mod:`deploy_res.core.guards`).
    """

    reference: Optional[str] = None
    reference_weights: Optional[str] = None
    data: Optional[str] = None
    samples: Optional[int] = None
    batch: int = DEFAULT_BATCH
    limits: Optional[Mapping[str, Optional[float]]] = None
    confidence: float = DEFAULT_CONFIDENCE
    seed: int = 0
    per_layer: bool = False
    skip_bad_files: bool = False
    backend: Optional[str] = None
    ray: Optional[RayOptions] = None
    any_batch: bool = False

    def __post_init__(self) -> None:
        require_at_least_one(self, "samples", "batch")
        for name, value in (self.limits or {}).items():
            if name not in LIMIT_NAMES:
                raise DeployResError(f"unknown threshold {name!r}; known: {', '.join(LIMIT_NAMES)}")
            if value is not None and not math.isfinite(value):
                raise DeployResError(f"limit {name} must be a finite number, got {value}")
        if not 0.5 <= self.confidence < 1:
            raise DeployResError(f"--confidence must be at least 0.5 and below 1, got {self.confidence}")
        if self.ray is not None and self.per_layer:
            raise DeployResError("--per-layer runs in one process (it keeps every input); drop --ray for it")
