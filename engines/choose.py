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
  too, so where they disagree the manifest shows it). Timing avoids the
  thread-spinning trap (FACTS.md): every timed block starts after a
  :data:`SETTLE_S` pause, engines alternate block by block, and the figure is
  the median of :data:`ROUNDS` blocks.

Measured on the machine of this session (Xeon, AVX-512 VNNI + AMX, 2 threads):
see README, "OpenVINO on the CPU".
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

SETTLE_S = 0.05
"""Pause before each timed block: longer than ONNX Runtime's pool threads keep spinning (5 ms is not enough)."""
ROUNDS = 5
"""Timed blocks per engine and batch size."""
RUNS_PER_BLOCK = 2
"""Back-to-back runs in one block; the block's median run is its figure."""
BATCHES = (1, 8)


def cpu_candidates(precision: str) -> tuple[str, ...]:
    """The CPU backends ``auto`` considers for ``precision`` (one name: no measurement needed)."""
    if precision == "bf16":
        return ("openvino",)
    if precision == "fp16":
        return ("onnxruntime",)
    from deploy_res.engines.openvino import OpenVINOBackend

    if OpenVINOBackend().available() is not None:
        return ("onnxruntime",)
    return ("onnxruntime", "openvino")


def _feeds(runner, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for info in runner.inputs:
        shape = [batch if i == 0 else (d if isinstance(d, int) and d > 0 else 1) for i, d in enumerate(info.shape)]
        feeds[info.name] = rng.standard_normal(shape).astype(info.dtype if info.dtype != "bfloat16" else "float32")
    return feeds


def measure(engines: Mapping[str, Path], batches: Sequence[int] = BATCHES, threads: Optional[int] = None,
            rounds: int = ROUNDS, settle_s: float = SETTLE_S) -> dict[str, dict[int, float]]:
    """Images/s of each engine (name -> path) at each batch size, timed side by side (see the module docstring)."""
    from deploy_res.engines import load_engine

    runners = {name: load_engine(path, threads=threads) for name, path in engines.items()}
    try:
        feeds = {name: {b: _feeds(r, b) for b in batches} for name, r in runners.items()}
        for name, runner in runners.items():  # warm-up: first runs allocate and pick kernels
            for b in batches:
                runner.run(feeds[name][b])
        times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in runners}
        for _ in range(rounds):
            for b in batches:
                for name, runner in runners.items():
                    time.sleep(settle_s)
                    block = []
                    for _ in range(RUNS_PER_BLOCK):
                        start = time.perf_counter()
                        runner.run(feeds[name][b])
                        block.append(time.perf_counter() - start)
                    times[name][b].append(statistics.median(block))
    finally:
        for runner in runners.values():
            runner.close()
    return {name: {b: round(b / statistics.median(ts), 2) for b, ts in per.items()} for name, per in times.items()}


def pick(images_per_s: Mapping[str, Mapping[int, float]]) -> tuple[str, int]:
    """The backend with the most images/s at the largest batch measured, and that batch."""
    batch = max(next(iter(images_per_s.values())))
    return max(images_per_s, key=lambda name: images_per_s[name][batch]), batch


def record(images_per_s: Mapping[str, Mapping[int, float]], chosen: str, batch: int, threads: Optional[int]) -> dict[str, Any]:
    """The manifest's ``auto`` entry: what was measured, what won, by which rule."""
    return {"chosen": chosen, "rule": f"most images/s at batch {batch}, timed side by side at build",
            "images_per_s": {name: {str(b): v for b, v in per.items()} for name, per in images_per_s.items()},
            "method": f"{ROUNDS} alternating blocks of {RUNS_PER_BLOCK} runs per engine and batch, {int(SETTLE_S * 1000)} ms pause before each, median",
            "threads": threads}
