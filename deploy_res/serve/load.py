"""A served model under load: throughput and latency per concurrency level, with the server's batch sizes.

:func:`load_test` runs, for each concurrency level, a bounded closed loop: that
many threads, each with its own ``tritonclient`` (HTTP or gRPC), sending the
same request back to back for ``seconds``. Per level it returns requests/s,
samples/s (wall clock), the latency summary of ``deployres profile``
(:func:`deploy_res.profiling.stats.summarize`: mean, std, p50/p90/p95/p99 ms) and,
from the server's own statistics before and after the level, how many
requests each model execution merged and the batch sizes it ran.

``perf_analyzer`` is the tool for this where it runs; current wheels need
glibc 2.38 and did not run here (FACTS.md), so this loop is what deployres
uses and the result says so (``tool``).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.profiling.stats import summarize

TOOL = "tritonclient closed loop (deploy_res.serve.load)"


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        elif protocol == "http":
            import tritonclient.http as module
        else:
            raise DeployResError(f"unknown protocol {protocol!r}; use http or grpc")
    except ImportError:
        raise DeployResError("load tests need tritonclient (pip install 'deployres[triton]')") from None
    return module


def _statistics(client, model: str, protocol: str) -> dict[str, Any]:
    stats = client.get_inference_statistics(model, as_json=True) if protocol == "grpc" else client.get_inference_statistics(model)
    entry = stats["model_stats"][0]
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in entry.get("batch_stats", [])}
    return {"inferences": int(entry.get("inference_count", 0)), "executions": int(entry.get("execution_count", 0)), "batches": batches}


MAX_CLIENTS = 512
"""Concurrent clients one load test may start (each is a thread with its own connection)."""


def _guard(levels: Sequence[int], inputs: Mapping[str, np.ndarray]) -> None:
    """One line before any client starts: a level above :data:`MAX_CLIENTS`, or more requests in flight than the
    memory here holds (each request's inputs three times: the client's copy, the encoded body, the server's copy)."""
    from deploy_res.core.guards import Footprint, check_memory

    top = max(levels, default=1)
    if top > MAX_CLIENTS:
        raise DeployResError(f"concurrency {top} is more clients than one load test starts (at most {MAX_CLIENTS}); measure fewer")
    check_memory(top, Footprint(inputs=3 * sum(int(a.nbytes) for a in inputs.values()), source="each request's inputs"), "concurrency")


def load_test(url: str, model: str, inputs: Mapping[str, np.ndarray], levels: Sequence[int] = (1, 2, 4, 8),
              seconds: float = 5.0, protocol: str = "http", warmup_s: float = 1.0, keep_latencies: bool = False) -> dict[str, Any]:
    """Measure ``model`` served at ``url`` at each concurrency in ``levels`` (see the module docstring).

    ``inputs`` maps input names to arrays (batch axis first); every request sends them as they are.
    Defaults: concurrency 1, 2, 4, 8; 5 s per level; HTTP; 1 s warm-up at concurrency 1. ``keep_latencies`` (default
    False) adds each level's per-request latencies (ms, in completion order per client) as ``latencies_ms``.
    """
    _guard(levels, inputs)
    module = _client_module(protocol)
    batch = int(next(iter(inputs.values())).shape[0]) if inputs else 1

    def make_request():
        feeds = []
        for name, array in inputs.items():
            feed = module.InferInput(name, list(array.shape), _triton_dtype(array.dtype))
            feed.set_data_from_numpy(np.ascontiguousarray(array))
            feeds.append(feed)
        return feeds

    def run(concurrency: int, duration: float) -> tuple[list[float], list[str]]:
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop = time.perf_counter() + duration

        def worker() -> None:
            client = module.InferenceServerClient(url)
            feeds = make_request()
            mine, failed = [], []
            try:
                while time.perf_counter() < stop:
                    start = time.perf_counter()
                    try:
                        client.infer(model, feeds)
                    except Exception as exc:  # a failed request is counted and named, not retried
                        failed.append(str(exc).splitlines()[0][:200])
                        continue
                    mine.append(time.perf_counter() - start)
            finally:
                client.close()
                with lock:
                    latencies.extend(mine)
                    errors.extend(failed)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(duration + 120)
        return latencies, errors

    control = module.InferenceServerClient(url)
    try:
        if not control.is_model_ready(model):
            raise DeployResError(f"model {model!r} is not ready on {url}")
        if warmup_s > 0:
            run(1, warmup_s)
        results = []
        for level in levels:
            before = _statistics(control, model, protocol)
            started = time.perf_counter()
            latencies, errors = run(int(level), seconds)
            elapsed = time.perf_counter() - started
            after = _statistics(control, model, protocol)
            executions = after["executions"] - before["executions"]
            inferences = after["inferences"] - before["inferences"]
            ran = {size: count - before["batches"].get(size, 0) for size, count in after["batches"].items()
                   if count - before["batches"].get(size, 0) > 0}
            summary = summarize([t * 1000 for t in latencies], batch) if latencies else {}
            summary.pop("throughput", None)  # per-client; the wall-clock figure below is the served one
            results.append({
                "concurrency": int(level), "requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
                "seconds": round(elapsed, 3), "requests_per_s": len(latencies) / elapsed, "throughput": batch * len(latencies) / elapsed,
                **summary,
                "server": {"inferences": inferences, "executions": executions,
                           "samples_per_execution": inferences / executions if executions else None, "batch_sizes": ran},
                **({"latencies_ms": [t * 1000 for t in latencies]} if keep_latencies else {}),
            })
    finally:
        control.close()
    return {"tool": TOOL, "url": url, "model": model, "protocol": protocol, "request_batch": batch, "seconds_per_level": seconds,
            "levels": results}


def _triton_dtype(dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(np.dtype(dtype))


def markdown_table(result: Mapping[str, Any]) -> str:
    """The load test as a Markdown table (one row per concurrency level)."""
    lines = [f"{result['model']} at {result['url']} ({result['protocol']}, {result['request_batch']} sample(s) per request, "
             f"{result['seconds_per_level']:g} s per level; {result['tool']})", "",
             "| concurrency | req/s | samples/s | p50 ms | p90 ms | p99 ms | samples per execution | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for level in result["levels"]:
        if not level["requests"]:
            lines.append(f"| {level['concurrency']} | 0 | 0 | - | - | - | - | {level['errors']} |")
            continue
        merged = level["server"]["samples_per_execution"]
        lines.append(f"| {level['concurrency']} | {level['requests_per_s']:.1f} | {level['throughput']:.1f} | {level['p50_ms']:.1f} | "
                     f"{level['p90_ms']:.1f} | {level['p99_ms']:.1f} | {merged:.2f} | {level['errors']} |" if merged is not None else
                     f"| {level['concurrency']} | {level['requests_per_s']:.1f} | {level['throughput']:.1f} | {level['p50_ms']:.1f} | "
                     f"{level['p90_ms']:.1f} | {level['p99_ms']:.1f} | - | {level['errors']} |")
    return "\n".join(lines) + "\n"
