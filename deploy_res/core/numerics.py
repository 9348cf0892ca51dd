"""One numerics vocabulary: every tolerance, seeded inputs, the CPU session factory, and the error measures.

Tolerances (each stage's check, in one place):

- :data:`EXPORT_PARITY_RTOL` -- the raw export against PyTorch, of the largest
  reference logit (1e-3);
- :data:`PASS_CHECK_RTOL` -- each graph pass against the graph before it, of
  ``max(1, largest output)`` (1e-4; the floor of 1 keeps near-zero outputs from
  demanding exact equality);
- :data:`SERVE_CHECK_RTOL` -- a served model against the same engine in-process (1e-4);
- :data:`VALIDATION_LIMITS` -- the default pass/fail limits of ``validate`` per
  precision (:mod:`deploy_res.validation.thresholds` applies them).

Errors, under one set of key names everywhere: ``max_abs_error`` =
``max |actual - reference|``; ``max_abs_reference`` = ``max |reference|``;
``max_rel_error`` = ``max_abs_error / max_abs_reference`` (0 when both are 0,
inf when only the reference is).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from deploy_res.core.errors import DeployResError

EXPORT_PARITY_RTOL = 1e-3
"""Export parity: max |ONNX - PyTorch| <= this x max |PyTorch| at every checked batch size."""

PASS_CHECK_RTOL = 1e-4
"""Graph passes: max |after - before| <= this x max(1, max |before|) on every output."""

PASS_CHECK_RTOL_FP16 = 5e-3
"""Graph passes on graphs that compute in float16 (refolded FP16 weights round differently)."""

SERVE_CHECK_RTOL = 1e-4
"""Serving check: a served model's outputs within this x max |in-process output| of the engine run in-process."""

VALIDATION_LIMITS: dict[str, dict[str, Optional[float]]] = {
    "fp32": {"max_rel_error": 1e-3, "cosine_min": 0.99999, "top1_agreement": 1.0},
    "fp16": {"top1_drop_points": 0.5, "top5_drop_points": 0.5, "top1_agreement": 0.98, "cosine_mean": 0.999, "cosine_p5": 0.995},
    "bf16": {"top1_drop_points": 0.75, "top5_drop_points": 0.75, "top1_agreement": 0.95, "cosine_mean": 0.998, "cosine_p5": 0.99},
    "int8": {"top1_drop_points": 1.5, "top5_drop_points": 1.5, "top1_agreement": 0.90, "cosine_mean": 0.96, "cosine_p5": 0.85},
}
"""``validate``'s default limits per precision (None: not judged); see :mod:`deploy_res.validation.thresholds`."""


# ---------------------------------------------------------------- seeded inputs

def seeded_array(shape: Sequence[int], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Standard-normal floats, random booleans, small integers (0..3) of ``shape``."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(tuple(shape)).astype(dtype)
    if dtype == np.bool_:
        return rng.random(tuple(shape)) < 0.5
    return rng.integers(0, 4, size=tuple(shape)).astype(dtype)


def seeded_feeds(inputs: Iterable[tuple[str, Sequence[Any], Any]], batch: int, seed: int = 0,
                 shapes: Optional[Mapping[str, Sequence[int]]] = None) -> dict[str, np.ndarray]:
    """Seeded inputs for ``(name, shape, dtype)`` triples: the first axis takes ``batch`` when it is not a fixed size.

    Any other axis that is not a positive integer needs its full shape in
    ``shapes`` (by name), else a one-line error naming ``--input-shape``.
    Default seed 0; the same seed always gives the same arrays.
    """
    rng = np.random.default_rng(seed)
    given = dict(shapes or {})
    feeds = {}
    for name, shape, dtype in inputs:
        if name in given:
            dims = [int(d) for d in given[name]]
        else:
            dims = []
            for axis, dim in enumerate(shape):
                if isinstance(dim, (int, np.integer)) and dim > 0:
                    dims.append(int(dim))
                elif axis == 0:
                    dims.append(batch)
                else:
                    raise DeployResError(f"input '{name}' has a dynamic axis {axis} ({dim!r}) besides the batch; give its full shape: "
                                         f"--input-shape {name}:N,C,H,W (input_shapes={{'{name}': [...]}} in Python)")
        feeds[name] = seeded_array(dims, dtype, rng)
    return feeds


# ---------------------------------------------------------------- the CPU session factory

def session_options(level: str = "ORT_DISABLE_ALL", threads: Optional[int] = None, spinning: bool = True,
                    optimized_path: Optional[Union[str, os.PathLike]] = None, profile_prefix: Optional[str] = None,
                    external: Optional[Mapping[str, np.ndarray]] = None):
    """ONNX Runtime session options as every deployres session uses them.

    Defaults: optimisation ``level`` ORT_DISABLE_ALL (checks must see the graph
    as written), the runtime's thread count, thread spinning on (ORT's default;
    one-shot checks turn it off), errors only in ORT's log. ``external``: large
    initializers handed over in memory instead of inside the model bytes.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only, for sessions ORT's own tools open too
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if external:
        options.add_external_initializers(list(external), [ort.OrtValue.ortvalue_from_numpy(v) for v in external.values()])
    return options


def cpu_session(model: Any, level: str = "ORT_DISABLE_ALL", **options: Any):
    """An ONNX Runtime session on the CPU provider for an ``onnx.ModelProto``, its bytes, or a path.

    ``options`` go to :func:`session_options` (threads, spinning, ...).
    """
    import onnxruntime as ort

    if isinstance(model, (str, os.PathLike)):
        source: Any = str(Path(model))
    else:
        source = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(source, session_options(level, **options), providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- errors

def max_errors(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """``max_abs_error``, ``max_abs_reference`` and ``max_rel_error`` (module docstring) over finite reference entries."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    keep = ~np.isnan(r)
    abs_error = float(np.max(np.abs(a - r)[keep], initial=0.0))
    abs_reference = float(np.max(np.abs(r[keep]), initial=0.0))
    return {"max_abs_error": abs_error, "max_abs_reference": abs_reference, "max_rel_error": relative(abs_error, abs_reference)}


def relative(abs_error: float, abs_reference: float) -> float:
    """``abs_error / abs_reference``: 0 when both are 0, inf when only the reference is."""
    if abs_reference > 0:
        return abs_error / abs_reference
    return 0.0 if abs_error == 0 else float("inf")
