"""Timing engines side by side so that each one's figure does not depend on what ran before it.

The trap (measured, FACTS.md): ONNX Runtime's pool threads keep spinning for
some milliseconds after a run (``session.intra_op.allow_spinning``, on by
default; OpenMP and TBB pools do the same). Timed round-robin in one process,
the engine that runs next shares the cores with those spinning threads and
loses ~40 % (ResNet-50 INT8 at batch 8 on 2 cores: 110 img/s instead of 187).

The method here keeps the interleaving (A, B, C, A, B, C, ... so a noisy
machine hits all engines alike) but times each engine in a *block*: a settle
pause of :data:`SETTLE_S` (50 ms; 5 ms was measured not to be enough), then
back-to-back timed runs for :data:`BLOCK_S` seconds (at least one). Only the
block's first run can follow another engine, and it follows the pause, so
every figure equals the engine timed alone in its own process (measured:
``benchmarks/bench_timing.py``; ``tests/profiling/test_settle.py`` keeps it so).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

SETTLE_S = 0.05
"""Pause before each timed block, seconds: longer than any runtime's thread pool keeps spinning."""

BLOCK_S = 0.2
"""Timed runs per block last at least this long, seconds (always at least one run)."""


def time_block(run: Callable[[], Any], *, settle_s: float = SETTLE_S, block_s: float = BLOCK_S, max_runs: Optional[int] = None,
               clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> list[float]:
    """Pause ``settle_s``, then time ``run()`` back to back until ``block_s`` has passed or ``max_runs`` ran.

    Returns each run's time in milliseconds (at least one). Exceptions from
    ``run`` propagate.
    """
    if settle_s > 0:
        sleep(settle_s)
    times: list[float] = []
    started = clock()
    while True:
        start = clock()
        run()
        stop = clock()
        times.append((stop - start) * 1000)
        if (max_runs is not None and len(times) >= max_runs) or stop - started >= block_s:
            return times


def interleave(runs: Mapping[str, Callable[[], Any]], *, iterations: int, warmup: int = 1, settle_s: float = SETTLE_S,
               block_s: float = BLOCK_S, clock: Callable[[], float] = time.perf_counter,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, list[float]]:
    """Time every callable in ``runs`` until each has ``iterations`` timings (ms), block by block, round-robin.

    ``warmup`` untimed calls of each come first. Defaults: one warm-up call,
    :data:`SETTLE_S` pause, :data:`BLOCK_S` blocks.
    """
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    while any(len(t) < iterations for t in times.values()):
        for label, run in runs.items():
            left = iterations - len(times[label])
            if left > 0:
                times[label] += time_block(run, settle_s=settle_s, block_s=block_s, max_runs=left, clock=clock, sleep=sleep)
    return times
