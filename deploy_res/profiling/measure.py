"""The measurement loop and what surrounds it: inputs, memory, FLOPs, the environment.

:func:`interleaved` times every runner round-robin (A, B, C, A, B, C, ...) in
one loop per batch size, so a noisy neighbour or a frequency change hits all
of them alike; each turn is a block (a 50 ms settle pause, then 0.2 s of
back-to-back runs) so that no figure depends on the engine that ran before it
(:mod:`deploy_res.core.timing`). Each sample is one ``run()`` timed with
``perf_counter`` around it: end-to-end host latency, including any
host<->device copies the runner makes (TensorRT's runner copies inputs and
outputs).

Memory: the process's resident-set high-water mark (``VmHWM`` in
``/proc/self/status``) is reset before each artifact loads (writing ``5`` to
``/proc/self/clear_refs``, Linux >= 4.0) and read after its first run at
every batch size: the peak while that artifact loaded and first ran, beside
the resident growth it left. Where the reset is refused, the peak is the
process's (``resource.getrusage``) and says so.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from deploy_res.core.numerics import seeded_feeds
from deploy_res.core.timing import BLOCK_S, SETTLE_S, time_block

MIN_ITERATIONS = 5
"""Duration mode still times each artifact at least this often per batch size."""


@dataclass
class Entry:
    """One column of the comparison: an artifact (or the torch reference) and its samples."""

    label: str
    kind: str  # "artifact" or "torch"
    path: Optional[str] = None
    runner: Any = None
    error: Optional[str] = None
    feeds: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    samples: dict[int, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.runner is not None and self.error is None


def make_feeds(runner, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for ``runner`` at ``batch`` (:func:`deploy_res.core.numerics.seeded_feeds`): dynamic axes other than the first fail."""
    specs = [(info.name, info.shape, np.dtype(info.dtype) if info.dtype in np.sctypeDict else np.float32) for info in runner.inputs]
    return seeded_feeds(specs, batch, seed=seed)


def interleaved(entries: Sequence[Entry], batches: Sequence[int], warmup_s: float = 1.0, duration_s: float = 5.0,
                iterations: Optional[int] = None, settle_s: float = SETTLE_S, block_s: float = BLOCK_S,
                clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                on_progress: Optional[Callable[[int, float], None]] = None) -> None:
    """Time every active entry round-robin at each batch size, appending milliseconds to ``entry.samples``.

    Per batch size: ``warmup_s`` seconds of untimed rounds (none when 0), then
    timed rounds until every entry has ``iterations`` samples (when given) or
    ``duration_s`` seconds have passed and each has at least
    :data:`MIN_ITERATIONS`. In each round every entry runs one block: a pause of
    ``settle_s`` (default 50 ms), then back-to-back timed runs for ``block_s``
    (default 0.2 s, at least one run), so no figure depends on the threads of
    the engine that ran before it (see :mod:`deploy_res.core.timing`). A runner
    that raises is marked with the error and left out of later rounds.
    ``on_progress(batch, fraction)`` follows each round. KeyboardInterrupt
    propagates with the samples taken so far kept.
    """
    for batch in batches:
        active = [e for e in entries if e.active and batch in e.feeds]
        if not active:
            continue
        start = clock()
        while warmup_s > 0 and clock() - start < warmup_s:
            for entry in active:
                _run_block(entry, batch, timed=False, settle_s=0, block_s=0, max_runs=1, clock=clock, sleep=sleep)
            active = [e for e in active if e.active]
            if not active:
                break
        start = clock()
        while active:
            for entry in active:
                left = iterations - len(entry.samples.get(batch, [])) if iterations else None
                if left is not None and left <= 0:
                    continue  # done; the others still time their blocks
                _run_block(entry, batch, timed=True, settle_s=settle_s, block_s=block_s, max_runs=left, clock=clock, sleep=sleep)
            active = [e for e in active if e.active]
            elapsed = clock() - start
            counts = [len(e.samples.get(batch, [])) for e in active] or [0]
            if iterations:
                fraction = min(counts) / iterations
                done = min(counts) >= iterations
            else:
                fraction = min(elapsed / duration_s, 1.0) if duration_s > 0 else 1.0
                done = elapsed >= duration_s and min(counts) >= MIN_ITERATIONS
            if on_progress:
                on_progress(batch, min(fraction, 1.0))
            if done:
                break


def _run_block(entry: Entry, batch: int, timed: bool, settle_s: float, block_s: float, max_runs: Optional[int],
               clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    feeds = entry.feeds[batch]
    try:
        times = time_block(lambda: entry.runner.run(feeds), settle_s=settle_s, block_s=block_s, max_runs=max_runs,
                           clock=clock, sleep=sleep)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a runner failing mid-run: report it, keep measuring the others
        entry.error = f"failed at batch {batch}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        return
    if timed:
        entry.samples.setdefault(batch, []).extend(times)


# ---------------------------------------------------------------- memory

def _status_kb(key: str) -> Optional[int]:
    try:
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def rss_mb() -> Optional[float]:
    """Resident set size now, MiB (None off Linux)."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def reset_peak_rss() -> bool:
    """Reset the resident high-water mark; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> Optional[float]:
    """Resident high-water mark since the last reset (VmHWM), else the process's (getrusage), MiB."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024


def process_peak_rss_mb() -> float:
    """The process's resident high-water mark over its life (getrusage; unaffected by resets), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- FLOPs

def complexity_of(manifest: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """MACs/FLOPs per sample of the model a manifest names, at the manifest's input size.

    A zoo model is built on the meta device (no memory, no time); a
    ``module:factory`` is built for real and measured with ``measure_complexity``.
    Returns ``{"macs", "flops", "parameters", "input_size", "source"}`` or
    ``{"error": reason}``.
    """
    model = (manifest or {}).get("model") or {}
    source = model.get("source")
    if not source:
        return {"error": "no model named in the manifest"}
    size = (manifest.get("preprocessing") or {}).get("input_size") or list((manifest.get("input") or {}).get("shape", [])[1:])
    try:
        import torch

        from deploy_res.models.complexity import measure_complexity

        if ":" in source:
            from deploy_res.loading import load_model

            module = load_model(source).module
            how = "factory"
        else:
            from deploy_res.models import get_spec

            spec = get_spec(source)
            with torch.device("meta"):
                module = spec.create().eval()
            size = size or list(spec.preprocessing.input_size)
            how = "zoo"
        cost = measure_complexity(module, tuple(int(s) for s in size))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"macs": cost.macs, "flops": 2 * cost.macs, "parameters": cost.parameters, "input_size": [int(s) for s in size], "source": how}


# ---------------------------------------------------------------- environment

def environment(threads: Optional[int] = None) -> dict[str, Any]:
    """CPU model and cores, GPU if any, library versions, thread settings."""
    from deploy_res.core.records import library_versions
    from deploy_res.engines import cpu_fingerprint

    cpu = cpu_fingerprint()
    physical = set()
    try:
        block: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            if not line.strip():
                if "core id" in block:
                    physical.add((block.get("physical id"), block["core id"]))
                block = {}
                continue
            key, _, value = line.partition(":")
            block[key.strip()] = value.strip()
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = {"name": torch.cuda.get_device_name(), "count": torch.cuda.device_count()}
        torch_threads = torch.get_num_threads()
    except Exception:
        torch_threads = None
    return {
        "cpu": {"model": cpu["model"], "machine": cpu["machine"], "isa": cpu["isa"], "logical_cores": os.cpu_count(),
                "physical_cores": len(physical) or None, "usable_cores": usable},
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}",
        "versions": library_versions(),
        "threads": {"requested": threads, "onnxruntime_intra_op": threads or "default (one per physical core)",
                    "torch": torch_threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
    }
