"""``profile``: latency, throughput, per-layer time, FLOPs and memory of engines, compared in one run.

Like trtexec, perf_analyzer and OpenVINO's benchmark_app, but several
artifacts at once: every artifact (and optionally the PyTorch original, the
``torch`` pseudo-artifact) is loaded, run once per batch size (first-run
cost, torch.compile's compilation), warmed up, then timed interleaved
(A, B, C, A, B, C, ...) so that noise hits all alike. Each artifact's ratio is
to the reference: the first artifact that was measured. After timing, each
ONNX Runtime artifact is run again in a separate, profiled session (the
profiler's own overhead never touches the timed runs) for the per-layer
breakdown; TensorRT plans through an IProfiler.

An artifact that cannot load here (a TensorRT plan without a GPU) is kept in
the report as not measured, with the reason. Ctrl-C during the run ends it
early: the report of what was measured is still written, with status
``interrupted``.

``server`` adds a served-model profile (:mod:`deploy_res.profiling.served`):
a model repository started on the bundled ``tritonserver`` (loopback, stopped
by its PID), or ``HOST:PORT`` of a running Triton, measured under each
concurrency level after the artifacts, into the report's ``served`` section.
With a server, the artifacts may be none.

Defaults: batches (1, 8); warmup 1 s and duration 5 s per batch size (all
artifacts together); ``iterations`` replaces the duration with a fixed number
of rounds; threads: the runtime's default (ONNX Runtime: one per physical
core; torch: its own); 10 profiled runs per batch size for the layer
breakdown; reports in ``<first artifact's folder>/report/``.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from deploy_res.core.manifest import precision_of
from deploy_res.core.errors import DeployResError
from deploy_res.core.timing import BLOCK_S, SETTLE_S
from deploy_res.profiling.measure import (MIN_ITERATIONS, Entry, complexity_of, environment, interleaved, make_feeds,
                                          peak_rss_mb, process_peak_rss_mb, reset_peak_rss, rss_mb)
from deploy_res.profiling.stats import summarize

SCHEMA_NAME = "deployres.profile"
SCHEMA_VERSION = 1
TORCH_LABELS = {"eager": "torch eager", "compile": "torch.compile"}
LAYER_NOTE_ORT = ("ONNX Runtime profiler, separate profiled session; node names are those of the graph ONNX Runtime optimised "
                  "(fused Conv+BN+Add+ReLU nodes are named after their last output, layout nodes ReorderInput/ReorderOutput "
                  "are added), so they differ from the exported ONNX; stages come from the PyTorch module path in each name")
LAYER_NOTE_TRT = "TensorRT IProfiler; layer names join the ONNX nodes TensorRT fused with ' + '"
LAYER_NOTE_OV = ("OpenVINO performance counters (PERF_COUNT, InferRequest.get_profiling_info), separately compiled engine; "
                 "node names are those of OpenVINO's runtime graph, fused ops under the name of the op they absorbed into")


def profile(artifacts: Sequence[str | Path], batches: Sequence[int] = (1, 8), warmup_s: float = 1.0, duration_s: float = 5.0,
            iterations: Optional[int] = None, threads: Optional[int] = None, torch_modes: Sequence[str] = (),
            validation_results: Optional[Iterable[Mapping[str, Any]]] = None, output_dir: Optional[str | Path] = None,
            layer_iterations: int = 10, write: bool = True, quiet: bool = True, console=None,
            progress: Optional[Callable[[str, float], None]] = None, server: Optional[str | Path] = None,
            server_models: Sequence[str] = (), concurrency: Sequence[int] = (1, 2, 4, 8), server_duration_s: float = 5.0,
            protocol: str = "http") -> dict[str, Any]:
    """Profile ``artifacts`` (paths to ONNX files, ONNX Runtime engines, TensorRT plans) and write the reports.

    ``torch_modes``: any of ``"eager"``, ``"compile"``: the PyTorch original named in
    the first artifact's manifest joins the comparison, after the artifacts.
    ``validation_results``: dicts from ``deployres validate --json`` (``artifact``,
    ``precision``, ``metrics.top1_agreement``...), matched to artifacts by path or
    file name; entries that match nothing are ignored. ``layer_iterations``: profiled
    runs per batch size for the layer breakdown (0 skips it). ``write``: write
    ``profile.json``, ``profile.md`` and ``profile.html`` into ``output_dir``. A rich
    progress bar is shown on ``console`` unless ``quiet``; ``progress(phase, fraction)``
    is called as the run goes, for callers with their own display.
    ``server``: a model repository folder or ``HOST:PORT`` to profile served
    (:func:`deploy_res.profiling.served.profile_server`) with ``server_models`` (default: all),
    ``concurrency`` levels, ``server_duration_s`` seconds per level and ``protocol``
    (``http`` or ``grpc``); the section is ``served`` (with ``error`` when the server could not
    be measured).

    Returns the report (see :mod:`deploy_res.reports.schema` for its schema), with
    ``report_paths`` added when written.
    """
    from deploy_res.core.files import ensure_output_dir
    from deploy_res.core.manifest import read_manifest

    artifacts = [Path(a) for a in artifacts]
    if not artifacts and server is None:
        raise DeployResError("profile needs at least one artifact (or a server)")
    if server is not None:
        from deploy_res.profiling.served import check_server

        check_server(server, concurrency, server_duration_s, protocol)  # a wrong --server fails before anything is measured
    batches = tuple(dict.fromkeys(int(b) for b in batches))
    if not batches or min(batches) < 1:
        raise DeployResError(f"batch sizes must be positive integers, got {batches}")
    if iterations is not None and iterations < 1:
        raise DeployResError("iterations must be at least 1")
    unknown = [m for m in torch_modes if m not in TORCH_LABELS]
    if unknown:
        raise DeployResError(f"unknown torch mode {unknown[0]!r}; choose from {', '.join(TORCH_LABELS)}")
    if output_dir:
        out = Path(output_dir)
    elif artifacts:
        out = artifacts[0].resolve().parent / "report"
    else:  # a server only: beside its repository, or here for HOST:PORT
        out = Path(server).resolve().parent / "report" if Path(server).is_dir() else Path("report")
    if write:
        ensure_output_dir(out)

    display = _Display(console, quiet, progress, len(batches))
    entries: list[Entry] = []
    manifests: dict[str, Optional[Mapping[str, Any]]] = {}
    status = "complete"
    served: Optional[dict[str, Any]] = None
    started = time.time()
    try:
        with display:
            for path in artifacts:
                manifest = read_manifest(path) if path.is_file() else None
                entry = Entry(label=_unique(path.name, entries), kind="artifact", path=str(path))
                manifests[entry.label] = manifest
                entries.append(entry)
                display.phase(f"loading {entry.label}")
                _load(entry, lambda p=path: _load_engine(p, threads), batches)
            first_manifest = manifests[entries[0].label] if entries else None
            for mode in torch_modes:
                entry = Entry(label=TORCH_LABELS[mode], kind="torch", info={"mode": mode})
                manifests[entry.label] = first_manifest
                entries.append(entry)
                display.phase(f"loading {entry.label}" + (" (compiling)" if mode == "compile" else ""))
                _load(entry, lambda m=mode: _load_torch(first_manifest, m, threads), batches)
            display.phase("measuring")
            if entries:
                interleaved(entries, batches, warmup_s=warmup_s, duration_s=duration_s, iterations=iterations,
                            on_progress=lambda batch, fraction: display.advance(batches.index(batch) + fraction, f"batch {batch}"))
            for entry in entries:
                _close(entry)
            if layer_iterations > 0:
                for entry in entries:
                    if entry.samples:
                        display.phase(f"per-layer profile of {entry.label}")
                        _profile_layers(entry, batches, layer_iterations, threads, out if write else None)
            if server is not None:
                served = _served(server, server_models, concurrency, server_duration_s, protocol, warmup_s, display)
                status = "interrupted" if served["status"] == "interrupted" else status
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        for entry in entries:
            _close(entry)
    if server is not None and served is None:  # Ctrl-C before the server's turn
        served = {"status": "interrupted", "error": "interrupted before the server was measured", "models": []}

    report = build_report(entries, manifests, batches=batches, warmup_s=warmup_s, duration_s=duration_s, iterations=iterations,
                          threads=threads, torch_modes=tuple(torch_modes), layer_iterations=layer_iterations, status=status,
                          validation_results=validation_results, seconds=time.time() - started)
    if served is not None:
        report["served"] = served
    if write:
        from deploy_res.reports import write_reports

        report["report_paths"] = {k: str(v) for k, v in write_reports(report, out).items()}
    return report


def _served(server, models, concurrency, seconds, protocol, warmup_s, display) -> dict[str, Any]:
    """The served section; a server that cannot be measured is recorded with its one-line reason, not raised."""
    from deploy_res.profiling.served import profile_server

    try:
        return profile_server(server, models=models, levels=concurrency, seconds=seconds, protocol=protocol,
                              warmup_s=warmup_s, phase=display.phase)
    except DeployResError as exc:
        return {"status": "complete", "error": _first_line(exc), "server": {"repository": str(server) if Path(server).is_dir() else None,
                                                                           "url": None if Path(server).is_dir() else str(server)},
                "models": []}


def read_validation_files(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Validation results from ``deployres validate --json`` files, leniently.

    Each file may hold a list of results, one result (a dict with ``artifact``), or
    a dict with the list under ``results``, ``artifacts`` or ``validations``.
    Entries that are not dicts with an ``artifact`` are skipped.
    """
    import json

    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeployResError(f"cannot read validation results {path}: {exc}") from None
        if isinstance(data, Mapping) and "artifact" not in data:
            data = next((data[k] for k in ("results", "artifacts", "validations") if isinstance(data.get(k), list)), [])
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, Mapping) and item.get("artifact"):
                results.append(dict(item))
    return results


# ---------------------------------------------------------------- loading

def _unique(label: str, entries: Sequence[Entry]) -> str:
    taken = {e.label for e in entries}
    candidate, n = label, 2
    while candidate in taken:
        candidate, n = f"{label} ({n})", n + 1
    return candidate


def _load_engine(path: Path, threads: Optional[int]):
    from deploy_res.engines import backend_of, load_engine

    backend = backend_of(path)
    if backend in ("onnxruntime", "openvino"):
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

            with load_engine(entry.path, threads=threads, perf_count=True) as runner:
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


# ---------------------------------------------------------------- the report

def _precision(entry: Entry, manifest: Optional[Mapping[str, Any]]) -> str:
    if entry.kind == "torch":
        return "fp32"
    try:
        return precision_of(entry.path or "", manifest)
    except DeployResError:  # not readable as ONNX: measured as what it is, labelled by its name
        name = Path(entry.path or "").name.lower()
        return next((p for p in ("int8", "fp16", "bf16") if p in name), "fp32")


def _match_validation(entry: Entry, results: Sequence[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    for result in results:
        target = result.get("artifact")
        if not target or entry.path is None:
            continue
        target = Path(str(target))
        if target.name == Path(entry.path).name or target.resolve() == Path(entry.path).resolve():
            metrics = result.get("metrics") if isinstance(result.get("metrics"), Mapping) else {}
            return {"precision": result.get("precision"), "metrics": dict(metrics),
                    "top1_agreement": metrics.get("top1_agreement"), "passed": result.get("passed")}
    return None


def build_report(entries: Sequence[Entry], manifests: Mapping[str, Optional[Mapping[str, Any]]], *, batches: Sequence[int],
                 warmup_s: float, duration_s: float, iterations: Optional[int], threads: Optional[int], torch_modes: Sequence[str],
                 layer_iterations: int, status: str, validation_results=None, seconds: float = 0.0) -> dict[str, Any]:
    """The report dict (schema in :mod:`deploy_res.reports.schema`) from measured entries."""
    validation = [v for v in (validation_results or []) if isinstance(v, Mapping)]
    complexities: dict[tuple, dict[str, Any]] = {}
    rows = []
    for entry in entries:
        manifest = manifests.get(entry.label)
        model = (manifest or {}).get("model") or {}
        key = (model.get("source"), tuple(((manifest or {}).get("preprocessing") or {}).get("input_size") or ()))
        if key not in complexities:
            complexities[key] = complexity_of(manifest) if manifest else {"error": "no manifest"}
        complexity = complexities[key]
        flops = complexity.get("flops")
        batch_rows = []
        for batch in batches:
            samples = entry.samples.get(batch)
            if not samples:
                continue
            summary = summarize(samples, batch)
            batch_rows.append({"batch": batch, **summary,
                               "gflops_per_s": flops * summary["throughput"] / 1e9 if flops else None,
                               "first_run_ms": entry.info.get("first_run_ms", {}).get(batch),
                               "samples_ms": [round(s, 4) for s in samples]})
        measured = bool(batch_rows)
        error = entry.error
        if not measured and not error:
            error = "interrupted before it was measured" if status == "interrupted" else "not measured"
        layers = entry.info.get("layers")
        if entry.kind == "torch":
            check = {"precision": "fp32", "metrics": {"top1_agreement": 1.0}, "top1_agreement": 1.0, "passed": True,
                     "note": "the PyTorch original is the reference validation compares against"} if validation else None
        else:
            check = _match_validation(entry, validation)
        rows.append({
            "label": entry.label, "kind": entry.kind, "path": entry.path,
            "backend": entry.info.get("backend") or ("torch" if entry.kind == "torch" else _guess_backend(entry.path)),
            "device": entry.info.get("device"), "precision": _precision(entry, manifest),
            "model": model.get("source"), "measured": measured, "error": error if not measured else entry.error,
            "notes": entry.info.get("notes", []), "skipped_batches": {str(k): v for k, v in entry.info.get("skipped_batches", {}).items()},
            "load_seconds": entry.info.get("load_seconds"), "memory": entry.info.get("memory"),
            "flops_per_sample": flops, "complexity": complexity,
            "batches": batch_rows,
            "layers": layers, "layers_missing": entry.info.get("layers_missing") if not layers else None,
            "validation": check,
        })
    reference = next((r for r in rows if r["measured"]), None)
    for row in rows:
        for b in row["batches"]:
            ref = next((x for x in (reference or {}).get("batches", []) if x["batch"] == b["batch"]), None)
            b["speedup_p50"] = ref["p50_ms"] / b["p50_ms"] if ref and b["p50_ms"] > 0 else None
            b["throughput_ratio"] = b["throughput"] / ref["throughput"] if ref and ref["throughput"] > 0 else None
    first_manifest = manifests.get(entries[0].label) if entries else None
    return {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": status, "seconds": seconds,
        "settings": {"batches": list(batches), "warmup_s": warmup_s, "duration_s": None if iterations else duration_s,
                     "iterations": iterations, "min_iterations": None if iterations else MIN_ITERATIONS, "threads": threads,
                     "torch_modes": list(torch_modes), "layer_iterations": layer_iterations, "order": "interleaved round-robin of blocks",
                     "settle_s": SETTLE_S, "block_s": BLOCK_S,
                     "timer": "time.perf_counter around each run(), host end-to-end"},
        "environment": environment(threads),
        "model": {"source": ((first_manifest or {}).get("model") or {}).get("source"),
                  "input": (first_manifest or {}).get("input"),
                  "preprocessing": (first_manifest or {}).get("preprocessing")},
        "reference": reference["label"] if reference else None,
        "process_peak_rss_mb": process_peak_rss_mb(),
        "artifacts": rows,
        "validation": validation,
    }


def _guess_backend(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    return "tensorrt" if str(path).endswith((".plan", ".engine", ".trt")) else "onnxruntime"


# ---------------------------------------------------------------- progress

class _Display:
    """A rich progress bar over the batch sizes (hidden when quiet), plus the caller's callback."""

    def __init__(self, console, quiet: bool, callback, total: int) -> None:
        self.callback, self.total, self.progress, self.task = callback, total, None, None
        if not quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]profile[/] {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                     TimeElapsedColumn(), console=console, transient=False)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def phase(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=text)
        if self.callback:
            self.callback(text, -1.0)

    def advance(self, completed: float, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, description=f"measuring, {text}")
        if self.callback:
            self.callback(text, completed / self.total)


__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "build_report", "profile", "read_validation_files"]
