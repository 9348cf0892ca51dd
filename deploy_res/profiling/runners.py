"""Loading what is profiled: an engine or the PyTorch original as a runner, its first run per batch size,
memory around loading, and closing it; a failure to load is recorded as the entry's reason, not raised."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from deploy_res.core.errors import DeployResError
from deploy_res.profiling.measure import Entry, make_feeds, peak_rss_mb, reset_peak_rss, rss_mb

def _unique(label: str, entries: Sequence[Entry]) -> str:
    taken = {e.label for e in entries}
    candidate, n = label, 2
    while candidate in taken:
        candidate, n = f"{label} ({n})", n + 1
    return candidate


def _load_engine(path: Path, threads: Optional[int], backend: Optional[str] = None):
    """``path`` loaded for timing; ``backend`` runs a plain ONNX file on that backend (see ``load_engine``)."""
    from deploy_res.engines import ONNX_BACKENDS, backend_of, load_engine

    if backend is not None:
        return load_engine(path, backend=backend, threads=threads)
    backend = backend_of(path)
    if backend in ONNX_BACKENDS:
        return load_engine(path, threads=threads)
    if backend == "tensorrt":
        from deploy_res.engines import unavailable

        reason = unavailable("tensorrt")
        if reason:
            raise DeployResError(f"TensorRT cannot run here: {reason}; profile this plan on a machine with an NVIDIA GPU and TensorRT")
    return load_engine(path)


def _load_torch(manifest, mode: str, threads: Optional[int]):
    from deploy_res.profiling.torch_ref import load_torch_runner

    if manifest is None:
        raise DeployResError("the first artifact has no manifest naming its PyTorch model")
    return load_torch_runner(manifest, mode, threads)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return text if isinstance(exc, DeployResError) else f"{type(exc).__name__}: {text}"


def _load(entry: Entry, loader: Callable[[], Any], batches: Sequence[int]) -> None:
    """Load, then run once per batch size; memory and first-run times go to ``entry.info``."""
    reset = reset_peak_rss()
    before = rss_mb()
    start = time.perf_counter()
    try:
        entry.runner = loader()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # any loader failure is a reason not to measure, not a crash
        entry.error = _first_line(exc)
        return
    entry.info["load_seconds"] = time.perf_counter() - start
    entry.info["backend"] = entry.runner.backend
    entry.info["device"] = entry.runner.device
    entry.info["notes"] = list(entry.runner.notes)
    entry.info["first_run_ms"], entry.info["skipped_batches"] = {}, {}
    for batch in batches:
        try:
            feeds = make_feeds(entry.runner, batch)
            start = time.perf_counter()
            entry.runner.run(feeds)
            entry.info["first_run_ms"][batch] = (time.perf_counter() - start) * 1000
            entry.feeds[batch] = feeds
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            reason = _first_line(exc)
            if entry.kind == "torch" and entry.info.get("mode") == "compile":
                reason = f"torch.compile failed: {reason}"
            entry.info["skipped_batches"][batch] = reason
    if not entry.feeds:
        entry.error = next(iter(entry.info["skipped_batches"].values()), "no batch size ran")
    entry.info["memory"] = {"rss_before_mb": before, "load_peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": rss_mb(),
                            "peak_is_per_artifact": reset}


def _close(entry: Entry) -> None:
    if entry.runner is not None:
        try:
            entry.runner.close()
        except Exception:
            pass
        entry.runner = None
