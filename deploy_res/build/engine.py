"""``build_engine``: an ONNX file becomes an engine at the precision its :class:`BuildSettings` ask for."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import onnx

from deploy_res.build.prepare import pass_target, prepared_graph
from deploy_res.build.settings import BuildSettings
from deploy_res.core.errors import DeployResError
from deploy_res.core.artifact import write_artifact
from deploy_res.core.facts import require_onnx
from deploy_res.core.files import output_folder
from deploy_res.core.records import file_record
from deploy_res.core.manifest import lineage, read_manifest
from deploy_res.core.names import calibration_cache_name, engine_name, model_stem, precision_onnx_name
from deploy_res.core.onnx_io import save_onnx
from deploy_res.engines import get_backend, missing_bf16_isa, qdq_layout, unavailable


@dataclass
class BuildEngineResult:
    """The files a build wrote: the ONNX the engine is built from, and the engine (None with ``onnx_only``)."""

    precision_onnx: Path
    engine: Optional[Path]
    backend: str
    precision: str
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_engine(onnx_path: str | Path, output_dir: Optional[str | Path] = None, settings: BuildSettings = BuildSettings(),
                 quiet: bool = False, console: Any = None) -> BuildEngineResult:
    """Build an engine from ``onnx_path`` (a raw export or an optimised ONNX) into ``output_dir`` (default: beside it).

    ``settings`` (:class:`BuildSettings`, FP32 on backend ``auto`` by default) say what to build. The float
    graph gets the passes its backend needs (:func:`deploy_res.build.prepare.pass_target`); FP16 converts
    it, INT8 calibrates on ``calib_data`` (cached) and emits Q/DQ in the backend's layout, BF16 is OpenVINO
    compiling the float graph. With ``onnx_only`` the FP16 / Q/DQ ONNX is written and no engine is built,
    so ``backend="tensorrt"`` works without TensorRT. A status line is shown on ``console`` unless ``quiet``.
    """
    source = Path(onnx_path)
    if not source.is_file():
        raise DeployResError(f"ONNX file {source} not found")
    require_onnx(source)  # an empty or non-ONNX file says so, before any data is read
    if settings.precision == "int8":  # the data is checked before any work starts
        from deploy_res.data.inputs import check_source

        check_source(settings.calib_data, None if settings.skip_bad_files else settings.calib_samples, what="calibration data")
    if settings.precision == "bf16":
        missing = missing_bf16_isa()
        if missing:
            raise DeployResError(missing)
        settings = replace(settings, backend="openvino")
    # A failed build removes the folders it created (a folder that was there stays as it was).
    with output_folder(output_dir or source.parent) as folder:
        return _build(source, folder, settings, quiet, console)


def _build(source: Path, folder: Path, settings: BuildSettings, quiet: bool, console: Any) -> BuildEngineResult:
    """:func:`build_engine` once its inputs are checked, into ``folder``."""
    status = _status(console, quiet)
    if settings.backend == "auto" and not settings.onnx_only and settings.device == "cpu" and unavailable("tensorrt") is not None:
        from deploy_res.build.auto import build_measured
        from deploy_res.engines.choose import cpu_candidates

        candidates = cpu_candidates(settings.precision)
        if len(candidates) > 1:
            return build_measured(candidates, lambda each: build_engine(source, folder, each, quiet, console), settings, status,
                                  reference=source)
        settings = replace(settings, backend=candidates[0])
    if settings.onnx_only:
        backend, engine_backend = ("onnxruntime" if settings.backend == "auto" else settings.backend), None
    else:
        engine_backend = get_backend(settings.backend)
        backend = engine_backend.name
    _check_onnx(source)

    start = time.perf_counter()
    notes: list[str] = []
    prepared = prepared_graph(source, pass_target(backend, settings.precision), folder, status, notes, settings.input_shapes)
    result = BuildEngineResult(prepared, None, backend, settings.precision, notes=notes)
    common = {**lineage(read_manifest(source)), **lineage(read_manifest(prepared))}
    stem = model_stem(source)
    if settings.precision == "fp16":
        result.precision_onnx = _fp16_onnx(prepared, folder / precision_onnx_name(stem, "fp16", backend), backend, common, settings, status, start)
    elif settings.precision == "int8":
        result.precision_onnx = _int8_onnx(prepared, folder, stem, qdq_layout(backend), common, settings, status, result.notes,
                                           start, quiet, console)
    result.artifacts.append(_summary(result.precision_onnx, settings.precision, time.perf_counter() - start))
    if settings.onnx_only:
        return result

    engine_path = folder / engine_name(stem, settings.precision, backend, settings.device)
    backend_settings = {"device": settings.device, "batch_range": common.get("batch_range"),
                        "timing_cache": str(settings.timing_cache or folder / "tensorrt.timing.cache"),
                        "precision": settings.precision, "engine_name": engine_path.name, "threads": settings.threads,
                        "hint": settings.perf_hint, **settings.tensorrt_options()}
    # The backend writes the engine to a temporary file; it is placed with its manifest as one unit.
    with status(f"building {backend} engine ({settings.precision})"), write_artifact(engine_path) as pending:
        built = engine_backend.build(result.precision_onnx, pending.path, backend_settings)
        pending.set_manifest("build-engine", {**common, **built.manifest, "settings": {"precision": settings.precision, "backend": backend},
                                              "seconds": round(built.seconds, 2)})
    if backend == "openvino":  # the first load compiles into the cache beside the engine; later loads read it
        with engine_backend.load(engine_path):
            pass
    result.engine = engine_path
    result.notes += built.notes
    result.artifacts.append(_summary(engine_path, settings.precision, built.seconds))
    return result


def _fp16_onnx(prepared: Path, output: Path, backend: str, common: dict, settings: BuildSettings, status: Callable, start: float) -> Path:
    """The FP16-typed ONNX (inputs and outputs stay FP32) and its manifest, as one unit."""
    from deploy_res.engines.precision.fp16 import convert_fp16

    keep = {"keep_op_types": tuple(settings.fp16_keep_op_types)} if settings.fp16_keep_op_types is not None else {}
    with status("converting to FP16"):
        model = convert_fp16(onnx.load(str(prepared)), **keep, keep_nodes=tuple(settings.fp16_keep_nodes))
    with write_artifact(output) as pending:
        save_onnx(model, pending.path)
        pending.set_manifest("precision", {**common, "inputs": {"onnx": file_record(prepared)},
                             "settings": {"precision": "fp16", "backend": backend,
                                          "keep_op_types": list(settings.fp16_keep_op_types or []), "keep_nodes": list(settings.fp16_keep_nodes)},
                             "seconds": round(time.perf_counter() - start, 2)})
    return output


def _int8_onnx(prepared: Path, folder: Path, stem: str, layout: str, common: dict, settings: BuildSettings, status: Callable,
               notes: list[str], start: float, quiet: bool, console: Any) -> Path:
    """The Q/DQ ONNX from calibration on real data (ranges cached), with the FP32 fallback if asked, and its manifest."""
    from deploy_res.engines.precision.calibration import calibrate
    from deploy_res.engines.precision.qdq import emit_qdq

    float_model = onnx.load(str(prepared))
    overflow_fix, why_fix = _overflow_fix(settings.overflow_fix, layout)
    samples = _calibration_samples(settings, common, float_model)
    cache = folder / calibration_cache_name(stem, settings.calib_method)
    ranges = calibrate(prepared, samples.arrays, method=settings.calib_method, cache_path=cache, quiet=quiet, console=console)
    with status(f"emitting Q/DQ in the {layout} layout"):
        model = emit_qdq(float_model, ranges, layout=layout, overflow_fix=overflow_fix)
    output = folder / precision_onnx_name(stem, "int8", layout)
    # The Q/DQ ONNX and its manifest as one unit; the fallback ranks layers on the temporary file.
    with write_artifact(output) as pending:
        save_onnx(model, pending.path)
        fallback = None
        if settings.int8_fallback:
            with status("ranking layer sensitivity and choosing FP32 fallbacks"):
                fallback = _fallback(pending.path, prepared, model, float_model, samples.arrays, settings)
            save_onnx(fallback.model, pending.path)
        calibration = {"method": settings.calib_method, "options": ranges.options, "samples": len(samples), "data": str(settings.calib_data),
                       "skipped_files": samples.skipped, "cache": str(cache), "cache_hit": ranges.from_cache, "cache_replaced": ranges.replaced,
                       "seconds": round(ranges.seconds, 2)}
        pending.set_manifest("precision", {**common, "inputs": {"onnx": file_record(prepared)},
                             "settings": {"precision": "int8", "layout": layout, "overflow_fix": overflow_fix, "overflow_fix_why": why_fix},
                             "calibration": calibration,
                             "fallback": fallback.to_dict() if fallback else None,
                             "seconds": round(time.perf_counter() - start, 2)})
    if fallback is not None:
        state = {"pass": "reached", "fail": "NOT reached", "inconclusive": "undecided: more calibration samples would tell"}.get(fallback.outcome, "")
        low, high = fallback.steps[-1]["interval"]
        notes.append(f"INT8 fallback: {len(fallback.layers)} layers in FP32, top-1 agreement {fallback.agreement_before:.3f} -> "
                     f"{fallback.agreement_after:.3f} [95 % interval {low:.3f}, {high:.3f}; {len(samples.arrays)} samples]"
                     + (f" (target {state})" if state else "") + f", batch-1 latency x{fallback.to_dict()['latency_cost']}")
    if overflow_fix != "none":
        notes.append(f"INT8 overflow fix: the first layers' weights at 7 bits ({why_fix})")
    notes.append(("reused" if ranges.from_cache else "wrote") + f" calibration cache {cache}"
                 + (f" (the file there {ranges.replaced}: recomputed)" if ranges.replaced else ""))
    return output


def _overflow_fix(asked: str, layout: str) -> tuple[str, str]:
    """The overflow fix the Q/DQ gets and why: ``auto`` resolves from this CPU for the CPU layout (:func:`overflow_fix_for`)."""
    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint
    from deploy_res.engines.precision.qdq import overflow_fix_for

    if asked != "auto":
        return asked, "asked for"
    if layout != "onnxruntime":
        return "none", f"the {layout} layout runs on a GPU"
    cpu = cpu_fingerprint()
    fix = overflow_fix_for(cpu["isa"])
    return fix, (f"this CPU ({cpu['model'] or cpu['machine']}) has no VNNI: its u8 x s8 sums are 16-bit and saturate" if fix != "none"
                 else "this CPU's u8 x s8 sums do not saturate (VNNI, AMX or not x86)")


def _calibration_samples(settings: BuildSettings, manifest: dict, model: onnx.ModelProto):
    from deploy_res.data.inputs import load_inputs
    from deploy_res.models import Preprocessing

    pre = settings.preprocessing or (Preprocessing.from_dict(manifest["preprocessing"]) if manifest.get("preprocessing") else None)
    if pre is None and Path(settings.calib_data).is_dir():
        raise DeployResError("this ONNX file has no manifest with preprocessing; pass --input-size, --mean, --std (and --crop-pct) for the calibration images")
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    _guard_calibration(Path(settings.calib_data), settings.calib_samples, dims)
    return load_inputs(settings.calib_data, pre, count=settings.calib_samples, skip_bad=settings.skip_bad_files,
                       input_shape=dims[1:], input_name=model.graph.input[0].name)


def _guard_calibration(source: Path, count: int, dims: list) -> None:
    """A one-line error before loading when the calibration samples would not fit in memory (they are held at once,
    as float32, beside the model being calibrated; :mod:`deploy_res.core.guards`)."""
    from deploy_res.core.guards import Footprint, check_memory
    from deploy_res.data.inputs import samples_held

    held = samples_held(source)
    held = min(count, held) if held is not None else count
    per_sample = 4 * int(np.prod([d or 1 for d in dims[1:]]))
    check_memory(held, Footprint(inputs=2 * per_sample, source="the calibration input's shape, loaded and batched"), "--calib-samples")


def _fallback(qdq_path: Path, float_path: Path, qdq, float_model, arrays, settings: BuildSettings):
    from deploy_res.engines.precision.fallback import fallback_search
    from deploy_res.validation.sensitivity import rank_layers

    ranking = rank_layers(qdq_path, float_path, arrays[:32])
    return fallback_search(qdq, float_model, ranking, arrays, target_agreement=settings.target_agreement, fallback_layers=settings.fallback_layers)


def _check_onnx(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DeployResError(f"{path} is not a valid ONNX model ({first[:200]}); re-export it") from None


def _summary(path: Path, precision: str, seconds: float) -> dict[str, Any]:
    return {"path": str(path), "bytes": path.stat().st_size, "precision": precision, "seconds": round(seconds, 2)}


def _status(console: Any, quiet: bool) -> Callable:
    if quiet or console is None:
        return lambda _message: contextlib.nullcontext()
    return lambda message: console.status(message)
