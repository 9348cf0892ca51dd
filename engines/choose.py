"""``--backend auto`` on a CPU: ONNX Runtime or OpenVINO, whichever is measured faster here.

The rule (:func:`cpu_candidates`, :func:`pick`):

- ``bf16``: OpenVINO (ONNX Runtime's CPU provider has no BF16 kernels); on a
  CPU without native BF16 the build stops with one line naming the missing
  instruction sets.
- ``fp16``: ONNX Runtime (OpenVINO's CPU plugin would run the FP16 ONNX in
  FP32 or BF16, not FP16).
- ``fp32`` and ``int8``: both engines are built and timed side by side at
  build, at batch 1 and at the largest batch of :data:`BATCHES` the engine
  takes; the faster at that larger batch wins (the batch-1 figures are recorded
  too, so where they disagree the manifest shows it). Timing is ``profile``'s
  (:func:`deploy_res.core.timing.interleave`), which avoids the
  thread-spinning trap (FACTS.md): engines alternate in blocks, each after a
  50 ms settle pause; the figure is the median of :data:`ITERATIONS` runs.

Measured on the machine of this session (Xeon, AVX-512 VNNI + AMX, 2 threads):
see README, "OpenVINO on the CPU".
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from deploy_res.core.numerics import seeded_array

ITERATIONS = 8
"""Timed runs per engine and batch size (median taken)."""
BLOCK_S = 0.1
"""Each engine runs back to back for at least this long per block, after the settle pause."""
BATCHES = (1, 8)


def cpu_candidates(precision: str) -> tuple[str, ...]:
    """The CPU backends ``auto`` considers for ``precision`` (one name: no measurement needed)."""
    if precision == "bf16":
        return ("openvino",)
    if precision == "fp16":
        return ("onnxruntime",)
    from deploy_res.engines import unavailable

    if unavailable("openvino") is not None:
        return ("onnxruntime",)
    return ("onnxruntime", "openvino")


def _feeds(runner, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for info in runner.inputs:
        shape = [batch if i == 0 else (d if isinstance(d, int) and d > 0 else 1) for i, d in enumerate(info.shape)]
        feeds[info.name] = seeded_array(shape, info.dtype if info.dtype != "bfloat16" else "float32", rng)
    return feeds


def measure(engines: Mapping[str, Path], batches: Sequence[int] = BATCHES, threads: Optional[int] = None,
            iterations: int = ITERATIONS) -> dict[str, dict[int, float]]:
    """Images/s of each engine (name -> path) at each batch size, timed side by side (see the module docstring)."""
    from deploy_res.core.timing import interleave
    from deploy_res.engines import load_engine

    with ExitStack() as loaded:  # every runner loaded so far is closed on the way out, also on an error
        runners = {name: loaded.enter_context(load_engine(path, threads=threads)) for name, path in engines.items()}
        result: dict[str, dict[int, float]] = {name: {} for name in runners}
        for batch in batches:
            feeds = {name: _feeds(runner, batch) for name, runner in runners.items()}
            runs = {name: (lambda r=runner, f=feeds[name]: r.run(f)) for name, runner in runners.items()}
            times = interleave(runs, iterations=iterations, warmup=2, block_s=BLOCK_S)
            for name, ms in times.items():
                result[name][batch] = round(batch * 1000 / statistics.median(ms), 2)
    return result


def pick(images_per_s: Mapping[str, Mapping[int, float]]) -> tuple[str, int]:
    """The backend with the most images/s at the largest batch measured, and that batch."""
    batch = max(next(iter(images_per_s.values())))
    return max(images_per_s, key=lambda name: images_per_s[name][batch]), batch


def record(images_per_s: Mapping[str, Mapping[int, float]], chosen: str, batch: int, threads: Optional[int]) -> dict[str, Any]:
    """The manifest's ``auto`` entry: what was measured, what won, by which rule."""
    from deploy_res.core.timing import SETTLE_S

    return {"chosen": chosen, "rule": f"most images/s at batch {batch}, timed side by side at build",
            "images_per_s": {name: {str(b): v for b, v in per.items()} for name, per in images_per_s.items()},
            "method": f"median of {ITERATIONS} runs per engine and batch, interleaved in blocks of >= {BLOCK_S} s after a {SETTLE_S * 1000:.0f} ms pause",
            "threads": threads}
