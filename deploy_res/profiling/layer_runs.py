"""Per-layer runs after timing: each artifact run again in a separately profiled session or engine
(ONNX Runtime's profiler, TensorRT's IProfiler, OpenVINO's performance counters), so the profiler's
overhead never touches the timed runs; :mod:`deploy_res.profiling.layers` parses what they record."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from deploy_res.profiling.measure import Entry
from deploy_res.profiling.runners import _first_line, _load_engine

LAYER_NOTE_ORT = ("ONNX Runtime profiler, separate profiled session; node names are those of the graph ONNX Runtime optimised "
                  "(fused Conv+BN+Add+ReLU nodes are named after their last output, layout nodes ReorderInput/ReorderOutput "
                  "are added), so they differ from the exported ONNX; stages come from the PyTorch module path in each name")
LAYER_NOTE_TRT = "TensorRT IProfiler; layer names join the ONNX nodes TensorRT fused with ' + '"
LAYER_NOTE_OV = ("OpenVINO performance counters (PERF_COUNT, InferRequest.get_profiling_info), separately compiled engine; "
                 "node names are those of OpenVINO's runtime graph, fused ops under the name of the op they absorbed into")



def _profile_layers(entry: Entry, batches: Sequence[int], iterations: int, threads: Optional[int], out: Optional[Path]) -> None:
    backend = entry.info.get("backend")
    measured = [b for b in batches if entry.samples.get(b)]
    try:
        if backend == "onnxruntime" and entry.path:
            _profile_ort(entry, measured, iterations, threads, out)
        elif backend == "tensorrt" and entry.path:
            from deploy_res.profiling.layers import profile_trt_layers

            with _load_engine(Path(entry.path), threads) as runner:
                per_batch = profile_trt_layers(runner, {b: entry.feeds[b] for b in measured}, iterations)
            entry.info["layers"] = {"source": "tensorrt IProfiler", "note": LAYER_NOTE_TRT, "trace": None,
                                    "batches": [{"batch": b, **per_batch[b]} for b in measured if b in per_batch]}
        elif backend == "openvino" and entry.path:
            from deploy_res.engines import load_engine
            from deploy_res.profiling.layers import onnx_scopes, profile_openvino_layers

            with load_engine(entry.path, backend="openvino", threads=threads, perf_count=True) as runner:
                per_batch = profile_openvino_layers(runner, {b: entry.feeds[b] for b in measured}, iterations, onnx_scopes(entry.path))
            entry.info["layers"] = {"source": "openvino performance counters", "note": LAYER_NOTE_OV, "trace": None,
                                    "batches": [{"batch": b, **per_batch[b]} for b in measured if b in per_batch]}
        else:
            entry.info["layers_missing"] = f"no per-layer profiler for the {backend} runner"
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        entry.info["layers_missing"] = f"per-layer profiling failed: {_first_line(exc)}"


def _profile_ort(entry: Entry, batches: Sequence[int], iterations: int, threads: Optional[int], out: Optional[Path]) -> None:
    import shutil
    import tempfile

    from deploy_res.engines import TraceProfiler, load_engine
    from deploy_res.profiling.layers import onnx_scopes, parse_ort_profile

    with tempfile.TemporaryDirectory(prefix="deployres-profile-") as tmp:
        run_batches = []
        with load_engine(entry.path, threads=threads, profile_prefix=str(Path(tmp) / "ort")) as runner:
            try:
                for batch in batches:
                    for _ in range(iterations):
                        runner.run(entry.feeds[batch])
                        run_batches.append(batch)
            finally:
                trace = runner.end_profiling() if isinstance(runner, TraceProfiler) else None
        per_batch = parse_ort_profile(trace, run_batches, onnx_scopes(entry.path))
        kept = None
        if out is not None and trace:
            traces = out / "traces"
            traces.mkdir(parents=True, exist_ok=True)
            kept = traces / f"{Path(entry.path).name}.ort-profile.json"
            shutil.copyfile(trace, kept)
    entry.info["layers"] = {"source": "onnxruntime profiler", "note": LAYER_NOTE_ORT, "trace": str(kept) if kept else None,
                            "batches": [{"batch": b, **per_batch[b]} for b in batches if b in per_batch]}
