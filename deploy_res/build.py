"""The build stage: an ONNX file becomes an engine at the precision asked for.

Precision lives in the ONNX (TensorRT 11 has no FP16/INT8 flags):

1. the graph passes prepare the float graph for the backend: ``onnxruntime``
   target for an FP32 ONNX Runtime engine, ``portable`` (standard ops, BN
   folded) for ONNX Runtime FP16/INT8 and for OpenVINO, ``tensorrt`` for TensorRT;
2. FP16 converts that graph to FP16 types; INT8 calibrates activation ranges
   on real data (cached) and emits Q/DQ for the backend;
3. the backend builds its engine from that ONNX (skipped with ``onnx_only``);
   BF16 has no ONNX of its own: OpenVINO compiles the float graph to BF16.

Files, for ``out/resnet50.onnx`` and ``--int8``:
``resnet50.portable.opt.onnx`` (float, passes applied),
``resnet50.calib-percentile.json`` (the ranges cache),
``resnet50.int8.onnxruntime.onnx`` (the Q/DQ ONNX) and
``resnet50.int8.cpu.ort.onnx`` (the engine), each with its manifest. An
OpenVINO engine is ``resnet50.int8.cpu.ov.xml`` + ``.ov.bin`` + the compiled
model cache ``resnet50.int8.cpu.ov.cache/``, built from the same Q/DQ ONNX.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import onnx

from deploy_res.core.files import ensure_output_dir, file_record, manifest_path, matches_record, verify_record, write_artifact
from deploy_res.core.manifest import Manifest, lineage, read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.models import Preprocessing
from deploy_res.engines import companions, get_backend, missing_bf16_isa, qdq_layout, unavailable
from deploy_res.engines.base import PRECISIONS

DEFAULT_CALIB_SAMPLES = 128
"""Calibration samples used by default (fewer available is an error)."""


@dataclass
class BuildEngineResult:
    """The files a build wrote: the ONNX the engine is built from, and the engine (None with onnx_only)."""

    precision_onnx: Path
    engine: Optional[Path]
    backend: str
    precision: str
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def model_stem(path: Path) -> str:
    """``resnet50.onnx`` / ``resnet50.opt.onnx`` / ``resnet50.tensorrt.opt.onnx`` -> ``resnet50``."""
    return re.sub(r"(\.(opt|onnxruntime|tensorrt|portable|fp32|fp16|int8))*\.onnx$", "", path.name) or path.stem


def pass_target(backend: str, precision: str) -> str:
    """Which graph-pass target the float graph needs before precision and build."""
    if backend == "tensorrt":
        return "tensorrt"
    if backend == "openvino":  # standard ops only: OpenVINO reads no com.microsoft fusions
        return "portable"
    return "onnxruntime" if precision == "fp32" else "portable"


def _prepared_graph(source: Path, target: str, folder: Path, quiet_status, notes: Optional[list[str]] = None,
                    input_shapes: Optional[Mapping] = None) -> Path:
    """The float graph with ``target``'s passes applied: the input itself if it already is, else optimised now.

    Nothing is reused on its manifest's word: an optimised input must still be the file its manifest
    recorded (else a one-line error), the raw export it names must match the sha256 recorded for it, and a
    prepared graph left by an earlier build is reused only when both it and its input match their recorded
    sha256; otherwise it is rebuilt (and ``notes`` says so).
    """
    from deploy_res.optimize import optimize_file

    manifest = read_manifest(source) or Manifest()
    if manifest.stage == "optimize":
        verify_record(source, manifest.get("artifact"), "optimised ONNX",
                      f"re-run `deployres optimize`, or delete the stale {manifest_path(source).name} to build from the file as it is")
        if manifest.get("settings", {}).get("target") == target:
            return source
        # optimised for another target: start again from its input
        raw_record = manifest.parent or {}
        raw = Path(raw_record.get("path", ""))
        if not raw_record or not raw.is_file():
            raise DeployResError(f"{source.name} is optimised for {manifest['settings']['target']}, this build needs {target}; pass the raw export instead")
        source = verify_record(raw, raw_record, "raw export", f"it is not what {source.name} was optimised from; pass the raw export itself")
    stem = model_stem(source)
    output = folder / (f"{stem}.opt.onnx" if target == "onnxruntime" else f"{stem}.{target}.opt.onnx")
    existing = read_manifest(output) if output.is_file() else None
    if existing and existing.get("settings", {}).get("target") == target and matches_record(source, existing.parent):
        if matches_record(output, existing.get("artifact")):
            return output
        if notes is not None:
            notes.append(f"{output.name} differs from the sha256 its manifest recorded: rebuilt it")
    with quiet_status(f"graph passes for {target}"):
        optimize_file(source, output, target=target, **({"input_shapes": input_shapes} if input_shapes else {}))
    return output


def _load_calibration(calib_data: Path, manifest: dict, samples: int, skip_bad: bool, preprocessing: Optional[Preprocessing], model: onnx.ModelProto):
    from deploy_res.data.inputs import load_inputs

    pre = preprocessing or (Preprocessing.from_dict(manifest["preprocessing"]) if manifest.get("preprocessing") else None)
    if pre is None and Path(calib_data).is_dir():
        raise DeployResError("this ONNX file has no manifest with preprocessing; pass --input-size, --mean, --std (and --crop-pct) for the calibration images")
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    return load_inputs(calib_data, pre, count=samples, skip_bad=skip_bad, input_shape=dims[1:], input_name=model.graph.input[0].name)


def build_engine(
    onnx_path: str | Path,
    output_dir: Optional[str | Path] = None,
    backend: str = "auto",
    precision: str = "fp32",
    calib_data: Optional[str | Path] = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    calib_method: Optional[str] = None,
    skip_bad: bool = False,
    fp16_keep_op_types: Sequence[str] | None = None,
    fp16_keep_nodes: Sequence[str] = (),
    onnx_only: bool = False,
    target_agreement: Optional[float] = None,
    fallback_layers: Optional[int] = None,
    device: str = "cpu",
    preprocessing: Optional[Preprocessing] = None,
    workspace_bytes: Optional[int] = None,
    optimization_level: Optional[int] = None,
    timing_cache: Optional[str | Path] = None,
    input_shapes: Optional[Mapping[Optional[str], Sequence[int]]] = None,
    threads: Optional[int] = None,
    perf_hint: Optional[str] = None,
    quiet: bool = False,
    console: Any = None,
) -> BuildEngineResult:
    """Build an engine from ``onnx_path`` (a raw export or an optimised ONNX).

    Defaults: backend ``auto`` (TensorRT where a GPU and TensorRT are present;
    on a CPU, per precision, ONNX Runtime or OpenVINO, whichever is measured
    faster at build: :mod:`deploy_res.engines.choose`), FP32, output beside the input, 128
    calibration samples, the calibration method of
    :data:`deploy_res.engines.precision.calibration.DEFAULT_METHOD`, TensorRT's timing
    cache at ``<output>/tensorrt.timing.cache``. With ``onnx_only`` the FP16 /
    Q/DQ ONNX is written and no engine is built, so ``backend="tensorrt"``
    works without TensorRT. INT8 with ``target_agreement`` (top-1 agreement
    with the FP32 graph on the calibration samples) or ``fallback_layers``
    leaves the most sensitive layers in FP32 (:mod:`deploy_res.engines.precision.fallback`).
    ``input_shapes`` (``{input name or None: full shape}``) sizes the graph passes' checks of an ONNX
    whose non-batch axes are dynamic (default: none, the graph's own shape).
    BF16 is an OpenVINO engine compiled from the float graph (CPUs with
    AVX512_BF16 or AMX only). ``threads`` and ``perf_hint`` (``latency`` or
    ``throughput``) are OpenVINO settings recorded in its manifest [default:
    OpenVINO's thread count, latency].
    """
    arguments = dict(locals())
    source = Path(onnx_path)
    if not source.is_file():
        raise DeployResError(f"ONNX file {source} not found")
    if precision not in PRECISIONS:
        raise DeployResError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8":  # checked before any work starts
        if calib_data is None:
            raise DeployResError("--int8 needs --calib-data DIR|FILE.npy|FILE.npz of real inputs (`deployres sample-photos DIR` writes real photos)")
        from deploy_res.data.inputs import check_source

        check_source(calib_data, None if skip_bad else calib_samples, what="calibration data")
    if fp16_keep_op_types:
        _check_op_types(fp16_keep_op_types)
    folder = ensure_output_dir(output_dir or source.parent)
    status = _status(console, quiet)
    backend_name = backend
    if precision == "bf16":
        _check_bf16(backend, onnx_only, device)
        backend = "openvino"
    if backend == "auto" and not onnx_only and device == "cpu" and _cpu_auto():
        from deploy_res.engines.choose import cpu_candidates

        candidates = cpu_candidates(precision)
        if len(candidates) > 1:
            return _build_measured(candidates, arguments)
        backend = candidates[0]
    if onnx_only and backend == "auto":
        backend_name = "onnxruntime"
    engine_backend = None
    if not onnx_only:
        engine_backend = get_backend(backend)
        backend_name = engine_backend.name
    _check_onnx(source)

    manifest_in = read_manifest(source) or {}
    start = time.perf_counter()
    target = pass_target(backend_name, precision)
    notes: list[str] = []
    prepared = _prepared_graph(source, target, folder, status, notes, input_shapes)
    stem = model_stem(source)
    result = BuildEngineResult(prepared, None, backend_name, precision, notes=notes)
    common = {**lineage(manifest_in), **lineage(read_manifest(prepared))}
    if precision == "fp16":
        from deploy_res.engines.precision.fp16 import convert_fp16

        with status("converting to FP16"):
            model = convert_fp16(onnx.load(str(prepared)), **({"keep_op_types": tuple(fp16_keep_op_types)} if fp16_keep_op_types is not None else {}), keep_nodes=tuple(fp16_keep_nodes))
        result.precision_onnx = folder / f"{stem}.fp16.{backend_name}.onnx"
        with write_artifact(result.precision_onnx) as pending:  # the ONNX and its manifest as one unit
            _save(model, pending.path)
            pending.set_manifest("precision", {**common, "inputs": {"onnx": file_record(prepared)},
                                 "settings": {"precision": "fp16", "target": backend_name, "keep_op_types": list(fp16_keep_op_types or []), "keep_nodes": list(fp16_keep_nodes)},
                                 "seconds": round(time.perf_counter() - start, 2)})
    elif precision == "int8":
        from deploy_res.engines.precision.calibration import DEFAULT_METHOD, calibrate
        from deploy_res.engines.precision.qdq import emit_qdq

        method = calib_method or DEFAULT_METHOD
        float_model = onnx.load(str(prepared))
        samples = _load_calibration(Path(calib_data), common, calib_samples, skip_bad, preprocessing, float_model)
        cache = folder / f"{stem}.calib-{method}.json"
        ranges = calibrate(prepared, samples.arrays, method=method, cache_path=cache, quiet=quiet, console=console)
        with status(f"emitting Q/DQ for {backend_name}"):
            model = emit_qdq(float_model, ranges, target=_qdq_layout(backend_name))
        result.precision_onnx = folder / f"{stem}.int8.{_qdq_layout(backend_name)}.onnx"
        # The Q/DQ ONNX and its manifest as one unit; the fallback ranks layers on the temporary file.
        with write_artifact(result.precision_onnx) as pending:
            _save(model, pending.path)
            fallback = None
            if target_agreement is not None or fallback_layers is not None:
                with status("ranking layer sensitivity and choosing FP32 fallbacks"):
                    fallback = _fallback(pending.path, prepared, model, float_model, samples.arrays, target_agreement, fallback_layers)
                _save(fallback.model, pending.path)
            calibration = {"method": method, "options": ranges.options, "samples": len(samples), "data": str(calib_data),
                           "skipped_files": samples.skipped, "cache": str(cache), "cache_hit": ranges.from_cache, "cache_replaced": ranges.replaced,
                           "seconds": round(ranges.seconds, 2)}
            pending.set_manifest("precision", {**common, "inputs": {"onnx": file_record(prepared)},
                                 "settings": {"precision": "int8", "target": _qdq_layout(backend_name)}, "calibration": calibration,
                                 "fallback": fallback.to_dict() if fallback else None,
                                 "seconds": round(time.perf_counter() - start, 2)})
        if fallback is not None:
            state = "reached" if fallback.reached else "NOT reached"
            result.notes.append(f"INT8 fallback: {len(fallback.layers)} layers in FP32, top-1 agreement {fallback.agreement_before:.3f} -> "
                                f"{fallback.agreement_after:.3f} (target {state}), batch-1 latency x{fallback.to_dict()['latency_cost']}")
        result.notes.append(("reused" if ranges.from_cache else "wrote") + f" calibration cache {cache}"
                            + (f" (the file there {ranges.replaced}: recomputed)" if ranges.replaced else ""))
    result.artifacts.append(_summary(result.precision_onnx, precision, time.perf_counter() - start))
    if onnx_only:
        return result

    suffix = {"tensorrt": ".plan", "openvino": f".{device}.ov.xml"}.get(backend_name, f".{device}.ort.onnx")
    engine_path = folder / f"{stem}.{precision}{suffix}"
    settings = {"device": device, "batch_range": common.get("batch_range"),
                "timing_cache": str(timing_cache or folder / "tensorrt.timing.cache"),
                "precision": precision, "engine_name": engine_path.name, "threads": threads, "hint": perf_hint}
    if workspace_bytes:
        settings["workspace_bytes"] = workspace_bytes
    if optimization_level is not None:
        settings["optimization_level"] = optimization_level
    # The backend writes the engine to a temporary file; it is placed with its manifest as one unit.
    with status(f"building {backend_name} engine ({precision})"), write_artifact(engine_path) as pending:
        built = engine_backend.build(result.precision_onnx, pending.path, settings)
        pending.set_manifest("build-engine", {**common, **built.manifest, "settings": {"precision": precision, "backend": backend_name},
                                              "seconds": round(built.seconds, 2)})
    if backend_name == "openvino":  # the first load compiles into the cache beside the engine; later loads read it
        with engine_backend.load(engine_path):
            pass
    result.engine = engine_path
    result.notes += built.notes
    result.artifacts.append(_summary(engine_path, precision, built.seconds))
    return result


def _qdq_layout(backend: str) -> str:
    """The Q/DQ layout a backend's INT8 engine is built from (OpenVINO runs ONNX Runtime's fastest)."""
    return qdq_layout(backend)


def _cpu_auto() -> bool:
    """Whether ``auto`` means a CPU backend here (no GPU with TensorRT)."""
    return unavailable("tensorrt") is not None


def _check_bf16(backend: str, onnx_only: bool, device: str) -> None:
    """BF16 is an OpenVINO CPU engine: OpenVINO casts the float graph at compile time; there is no BF16 ONNX to write."""
    if onnx_only:
        raise DeployResError("--bf16 writes no ONNX of its own (OpenVINO casts the float graph when it compiles); drop --onnx-only")
    if backend in ("onnxruntime", "tensorrt") or device != "cpu":
        raise DeployResError(f"--bf16 runs on OpenVINO on the CPU; use --backend openvino (or auto), not {backend if device == 'cpu' else '--device ' + device}")
    missing = missing_bf16_isa()
    if missing:
        raise DeployResError(missing)


def _build_measured(candidates: Sequence[str], arguments: dict[str, Any]) -> BuildEngineResult:
    """``auto`` on a CPU: build with every candidate backend, time them side by side, keep the faster engine."""
    import shutil

    from deploy_res.core.files import remove_artifact
    from deploy_res.core.manifest import write_manifest
    from deploy_res.engines import choose

    built = {name: build_engine(**{**arguments, "backend": name}) for name in candidates}
    batch_range = (read_manifest(built[candidates[0]].engine) or {}).get("batch_range") or {}
    low, high = int(batch_range.get("min") or 1), int(batch_range.get("max") or choose.BATCHES[-1])
    batches = tuple(sorted({low, max(low, min(choose.BATCHES[-1], high))}))
    with _status(arguments["console"], arguments["quiet"])(f"timing {' and '.join(candidates)} side by side"):
        speeds = choose.measure({name: result.engine for name, result in built.items()}, batches, threads=arguments["threads"])
    winner, batch = choose.pick(speeds)
    chosen = built[winner]
    manifest = read_manifest(chosen.engine) or {}
    body = {k: v for k, v in manifest.items() if k not in ("schema_version", "stage", "artifact", "versions")}
    body["auto"] = choose.record(speeds, winner, batch, arguments["threads"])
    write_manifest(chosen.engine, "build-engine", body)
    for name, result in built.items():  # the slower engine is not kept
        if name == winner or result.engine is None:
            continue
        files, folders = companions(result.engine, name)
        remove_artifact(result.engine, tuple(files))
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    figures = ", ".join(f"{name} {speeds[name][batch]:.1f}" for name in candidates)
    chosen.notes.append(f"auto: {winner} is faster here at batch {batch} ({figures} images/s, timed side by side)")
    small = min(batches)
    if small != batch and max(speeds, key=lambda name: speeds[name][small]) != winner:
        fastest = max(speeds, key=lambda name: speeds[name][small])
        chosen.notes.append(f"auto: at batch {small} {fastest} is faster ({', '.join(f'{n} {speeds[n][small]:.1f}' for n in candidates)} images/s); "
                            f"for batch-{small} serving build with --backend {fastest}")
    return chosen


def _fallback(qdq_path: Path, float_path: Path, qdq, float_model, arrays, target_agreement, fallback_layers):
    from deploy_res.validation.sensitivity import rank_layers
    from deploy_res.engines.precision.fallback import fallback_search

    ranking = rank_layers(qdq_path, float_path, arrays[:32])
    return fallback_search(qdq, float_model, ranking, arrays, target_agreement=target_agreement, fallback_layers=fallback_layers)


def _check_op_types(op_types: Sequence[str]) -> None:
    """A one-line error for a name that is no ONNX operator (``--fp16-keep-op-types`` takes ONNX op types)."""
    import difflib

    known = {schema.name for schema in onnx.defs.get_all_schemas_with_history()}
    for op_type in op_types:
        if op_type not in known:
            close = difflib.get_close_matches(op_type, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; give ONNX op types such as GlobalAveragePool,Sigmoid"
            raise DeployResError(f"--fp16-keep-op-types: {op_type!r} is not an ONNX op type{hint}")


def _check_onnx(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DeployResError(f"{path} is not a valid ONNX model ({first[:200]}); re-export it") from None


def _save(model: onnx.ModelProto, path: Path) -> None:
    from deploy_res.core.onnx_io import save_onnx

    save_onnx(model, path)


def _summary(path: Path, precision: str, seconds: float) -> dict[str, Any]:
    return {"path": str(path), "bytes": path.stat().st_size, "precision": precision, "seconds": round(seconds, 2)}


def _status(console: Any, quiet: bool):
    import contextlib

    if quiet or console is None:
        return lambda _message: contextlib.nullcontext()
    return lambda message: console.status(message)
