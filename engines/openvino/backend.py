"""OpenVINO engines on the CPU: FP32, BF16 and INT8 (from the pipeline's Q/DQ ONNX).

OpenVINO reads the ONNX the pipeline already makes: the float graph after the
``portable`` passes for FP32 and BF16, and the Q/DQ ONNX from the existing
calibration for INT8 (OpenVINO's low-precision transformations turn each
DequantizeLinear -> Conv pair into an integer convolution; the ``onnxruntime``
layout, uint8 activations with int8 per-channel weights, runs fastest, see
:data:`QDQ_LAYOUT`).

The engine is OpenVINO's IR (``<name>.ov.xml`` + ``.ov.bin``) plus the
compiled model for this CPU in a cache folder beside it (``<name>.ov.cache/``,
OpenVINO's ``CACHE_DIR``). Measured (ResNet-50, 2 threads, OpenVINO 2026.4.1):
loading IR + cache takes 0.066 s (FP32) / 0.081 s (INT8), importing the
``export_model`` blob 0.23 s / 0.11 s, because the cache is memory-mapped and
the blob is copied. OpenVINO keys its cache on the IR's path and the
compile settings, so the first load after a build (the build stage does it)
or after moving the files, or with other settings (threads, ``perf_count``),
compiles once (0.2-0.8 s) and adds that entry to the cache.

Precision is explicit. OpenVINO silently runs BF16 on CPUs that have it unless
``INFERENCE_PRECISION_HINT`` says otherwise, so an FP32 engine sets ``f32``,
a BF16 engine ``bf16`` and an INT8 engine ``f32`` for the layers that stay in
floating point; the manifest records the hint and the precision each
convolution actually runs in (from the compiled model's runtime graph).

Like an ONNX Runtime engine, a compiled model belongs to the CPU and the
OpenVINO version it was built with: the manifest records both, and loading it
elsewhere says so (a note) and recompiles from the source ONNX.

Settings, every one recorded in the manifest: ``threads`` (default: OpenVINO's,
all cores) and ``hint`` (``latency``, the default, or ``throughput``),
``precision`` (``fp32``, ``bf16``, ``int8``). The runner makes one synchronous
request at a time, which ``latency`` serves best (all threads on one stream);
``throughput`` splits the cores into streams for servers that keep several
requests in flight (OpenVINO Model Server, Triton's openvino backend). Loaded
with ``streams=N`` (``NUM_STREAMS``), the runner itself keeps N requests in
flight: it cuts each batch into N slices, one per stream (``deployres tune``'s
streams axis, ``deployres triton --streams``).
``openvino`` is imported only when a build or load is asked for.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from deploy_res.core.records import file_record
from deploy_res.core.manifest import read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.engines.base import BuildResult, RunnerBase, TensorInfo, check_options
from deploy_res.engines.onnxruntime.backend import cpu_fingerprint

PRECISIONS = ("fp32", "bf16", "int8")
HINTS = ("latency", "throughput")
DEFAULT_HINT = "latency"
QDQ_LAYOUT = "onnxruntime"
"""The Q/DQ layout (``engines/precision/qdq.py`` target) OpenVINO builds INT8 from.

Measured at batch 8, 2 threads, Xeon with AVX-512 VNNI + AMX, OpenVINO 2026.4.1,
same calibration, round-robin with a 50 ms pause: resnet18 ``onnxruntime``
layout 162 img/s (cosine vs FP32 0.9993) vs ``tensorrt`` layout 135 (0.9989);
resnet50 128 (0.9876) vs 101 (0.9853). Both layouts give all 53 ResNet-50
convolutions as u8 kernels; the symmetric int8 activations of the TensorRT
layout cost OpenVINO ~20 %."""
ENGINE_SUFFIX = ".ov.xml"
BF16_ISA = ("avx512_bf16", "amx_bf16")
"""CPU flags with which OpenVINO runs BF16 natively (AVX512_BF16 on Zen 4/5 and Cooper Lake; AMX on Sapphire Rapids+)."""

_HINT_VALUES = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
INSTEAD = "use --backend onnxruntime"
"""What to use where OpenVINO cannot run."""


def _ov():
    try:
        import openvino
    except ImportError:
        raise DeployResError(f"OpenVINO is not installed (pip install openvino); {INSTEAD}") from None
    return openvino


def missing_bf16_isa(fingerprint: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """``None`` if this CPU runs BF16 natively, else the one line naming the missing instruction sets."""
    fingerprint = fingerprint or cpu_fingerprint()
    isa = set(fingerprint.get("isa", []))
    if isa & set(BF16_ISA):
        return None
    return (f"this CPU ({fingerprint.get('model') or fingerprint.get('machine')}) has no native BF16: "
            f"neither {' nor '.join(BF16_ISA)} is among its flags; use --int8 or FP32")


def _config(precision: str, threads: Optional[int], hint: str, perf_count: bool = False, streams: Optional[int] = None) -> dict[str, Any]:
    if hint not in HINTS:
        raise DeployResError(f"unknown OpenVINO performance hint {hint!r}; choose {' or '.join(HINTS)}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": _HINT_VALUES[hint], "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if streams:
        config["NUM_STREAMS"] = int(streams)
    if perf_count:
        config["PERF_COUNT"] = True
    return config


def _element_dtype(port) -> str:
    try:
        return np.dtype(port.get_element_type().to_dtype()).name
    except Exception:
        return str(port.get_element_type())


def _shape(port) -> tuple:
    return tuple(None if d.is_dynamic else d.get_length() for d in port.get_partial_shape())


def _name(port) -> str:
    names = port.get_names()
    return port.get_any_name() if names else str(port.get_index())


def runtime_precisions(compiled) -> dict[str, Any]:
    """What the compiled model really runs: the precision hint and, per op kind, counts of runtime precisions.

    Reads ``runtimePrecision`` from the runtime (execution) graph: convolutions
    in ``u8``/``i8`` are INT8 kernels, ``bf16`` BF16, ``f32`` FP32.
    """
    counts: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        keys = set(info.keys())
        layer = info["layerType"].astype(str) if "layerType" in keys else op.get_type_name()
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in keys else None
        if not precision or layer in ("Input", "Output", "Parameter", "Result", "Const", "Constant"):
            continue
        counts.setdefault(layer, Counter())[precision.lower()] += 1
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    hint = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    conv = counts.get("Convolution", Counter())
    return {"inference_precision_hint": hint, "convolution": dict(conv), "by_layer_type": {k: dict(v) for k, v in sorted(counts.items())}}


_PRECISION_OF = {"u8": "int8", "i8": "int8", "bf16": "bf16", "f32": "fp32", "f16": "fp16"}
"""The engine precision each OpenVINO runtime precision of a convolution belongs to."""


def _precisions_run(runtime: Mapping[str, Any]) -> set[str]:
    """The engine precisions (:data:`_PRECISION_OF`) the convolutions of ``runtime`` (:func:`runtime_precisions`) run in."""
    return {_PRECISION_OF.get(k.lower(), k.lower()) for k in runtime.get("convolution") or {}}


def precision_run(runtime: Mapping[str, Any]) -> str:
    """The precision the convolutions run in: ``int8``, ``bf16``, ``fp32`` or ``mixed``."""
    run = _precisions_run(runtime)
    return run.pop() if len(run) == 1 else ("mixed" if run else "unknown")


class OpenVINORunner(RunnerBase):
    """A loaded OpenVINO engine: ``run(feeds) -> outputs`` on one infer request per stream; a
    :class:`~deploy_res.engines.base.LayerCounters` (load with ``perf_count=True``).

    With one stream (the default) a batch runs as one synchronous request. With ``streams`` > 1 a batch of
    several samples is cut into up to that many contiguous slices, run at once, one per stream's request, and
    joined back in order: what OpenVINO's throughput mode needs to keep its streams busy from one caller."""

    backend = "openvino"
    device = "cpu"

    def __init__(self, compiled, notes: list[str], load_seconds: float, settings: Mapping[str, Any]) -> None:
        super().__init__(notes, load_seconds)
        self.compiled = compiled
        self.requests = [compiled.create_infer_request() for _ in range(max(1, int(settings.get("streams") or 1)))]
        self.request = self.requests[0]
        self.settings = dict(settings)
        self.inputs = [TensorInfo(_name(p), _shape(p), _element_dtype(p)) for p in compiled.inputs]
        self.outputs = [TensorInfo(_name(p), _shape(p), _element_dtype(p)) for p in compiled.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feeds.values())))
        if len(self.requests) == 1 or batch < 2:
            results = self.request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
            # the request reuses its output buffers on the next run: copy
            return {info.name: np.array(results[port]) for info, port in zip(self.outputs, self.compiled.outputs)}
        bounds = np.linspace(0, batch, min(batch, len(self.requests)) + 1).astype(int)
        used = self.requests[: len(bounds) - 1]
        for request, start, stop in zip(used, bounds[:-1], bounds[1:]):
            request.start_async({name: np.ascontiguousarray(value[start:stop]) for name, value in feeds.items()})
        for request in used:
            request.wait()
        return {info.name: np.concatenate([np.array(request.get_tensor(port).data) for request in used])
                for info, port in zip(self.outputs, self.compiled.outputs)}

    def profiling_info(self) -> list[tuple[str, str, float]]:
        """``(layer name, exec type, ms)`` of the last run (load with ``perf_count=True``); not-run layers left out."""
        ov = _ov()
        records = []
        for info in self.request.get_profiling_info():
            if info.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            records.append((info.node_name, info.node_type, info.real_time.total_seconds() * 1000))
        return records

    def runtime_precisions(self) -> dict[str, Any]:
        return runtime_precisions(self.compiled)

    def close(self) -> None:
        self.request, self.requests = None, []
        self.compiled = None


def cache_dir_of(engine_path: Path) -> Path:
    """``resnet50.int8.cpu.ov.xml`` -> ``resnet50.int8.cpu.ov.cache`` (OpenVINO's compiled-model cache)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name[: -len(".xml")] + ".cache") if engine_path.name.endswith(".xml") else engine_path.with_name(engine_path.name + ".cache")


class OpenVINOBackend:
    """Build: IR + this CPU's compiled model (cache) at the precision asked for. Load: check the machine, compile from cache."""

    name = "openvino"
    OPTIONS = frozenset({"device", "threads", "hint", "perf_count", "streams"})

    def available(self) -> Optional[str]:
        try:
            _ov()
        except DeployResError:
            return "OpenVINO is not installed (pip install openvino)"
        return None

    def build(self, onnx_path: Path, engine_path: Path, settings: Mapping[str, Any]) -> BuildResult:
        """Settings: ``precision`` (fp32 default; int8 needs a Q/DQ ONNX), ``threads`` (OpenVINO's default), ``hint`` (latency)."""
        ov = _ov()
        if settings.get("device", "cpu") != "cpu":
            raise DeployResError("the OpenVINO backend here runs on the CPU only; use --device cpu")
        precision = settings.get("precision") or "fp32"
        if precision not in PRECISIONS:
            raise DeployResError(f"OpenVINO engines are {', '.join(PRECISIONS)}, not {precision}")
        if precision == "bf16" and missing_bf16_isa():
            raise DeployResError(missing_bf16_isa())
        engine_path = Path(engine_path)
        # the build stage may hand a temporary name that it renames once the manifest is written:
        # the weights and the cache are named after the final engine
        final = engine_path.with_name(settings.get("engine_name") or engine_path.name)
        if not final.name.endswith(".xml"):
            raise DeployResError(f"an OpenVINO engine is an IR: name it *{ENGINE_SUFFIX}, not {final.name}")
        threads, hint = settings.get("threads"), settings.get("hint") or DEFAULT_HINT
        notes: list[str] = []
        start = time.perf_counter()
        model = _read(ov.Core(), Path(onnx_path))
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            tmp_xml = folder / final.name
            ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
            compiled = _compile_ir(ov.Core(), tmp_xml, _config(precision, threads, hint))
            runtime = runtime_precisions(compiled)
            del compiled
            shutil.rmtree(cache_dir_of(final), ignore_errors=True)  # compiled for the old weights
            os.replace(tmp_xml.with_suffix(".bin"), final.with_suffix(".bin"))
            os.replace(tmp_xml, engine_path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        cache = cache_dir_of(final)
        seconds = time.perf_counter() - start
        ran = precision_run(runtime)
        if ran != precision:
            notes.append(f"OpenVINO runs this {precision} engine's convolutions as {runtime['convolution']}")
        manifest = {
            "engine": {"backend": self.name, "device": "cpu", "cpu": cpu_fingerprint(), "openvino": ov.get_version(),
                       "format": "IR + compiled-model cache", "cache_dir": cache.name, "weights": final.with_suffix(".bin").name,
                       "precision": precision, "precision_run": ran, "runtime_precisions": runtime, "threads": threads, "hint": hint},
            "source": file_record(onnx_path),
        }
        return BuildResult(engine_path, manifest, seconds, notes)

    def load(self, engine_path: Path, **options: Any) -> OpenVINORunner:
        """Compile the IR from its cache; on another CPU or OpenVINO version, recompile from the source ONNX (with a note).

        Options: ``threads`` (all streams together) and ``hint`` (latency/throughput) override the
        manifest's; ``streams`` (default None: the hint's, one for ``latency``) sets OpenVINO's
        ``NUM_STREAMS``; the runner keeps one infer request per stream (see :class:`OpenVINORunner`); ``perf_count`` (bool) turns on OpenVINO's per-layer
        counters (``profiling_info``); ``device`` may only be "cpu". A plain
        ONNX file is compiled at FP32.
        """
        check_options(self.name, options, self.OPTIONS)
        threads: Optional[int] = options.get("threads")
        hint: Optional[str] = options.get("hint")
        streams: Optional[int] = options.get("streams")
        if streams is not None and (not isinstance(streams, int) or isinstance(streams, bool) or streams < 1):
            raise DeployResError(f"OpenVINO streams must be a positive integer, got {streams!r}")
        perf_count = bool(options.get("perf_count", False))
        device: Optional[str] = options.get("device")
        ov = _ov()
        if device not in (None, "cpu"):
            raise DeployResError("the OpenVINO backend here runs on the CPU only")
        engine_path = Path(engine_path)
        manifest = read_manifest(engine_path) or {}
        engine = manifest.get("engine", {})
        own = engine.get("backend") == self.name
        precision = engine.get("precision", "fp32") if own else "fp32"
        threads = threads if threads is not None else engine.get("threads")
        hint = hint or engine.get("hint") or DEFAULT_HINT
        config = _config(precision, threads, hint, perf_count, streams)
        notes: list[str] = []
        core = ov.Core()
        start = time.perf_counter()
        if not own:
            compiled = _compile(core, engine_path, config)
        else:
            built_for = (engine.get("cpu"), engine.get("openvino"))
            here = (cpu_fingerprint(), ov.get_version())
            if built_for == here and engine_path.with_suffix(".bin").is_file():
                core.set_property({"CACHE_DIR": str(cache_dir_of(engine_path))})
                compiled = _compile_ir(core, engine_path, config)
            else:
                model = (built_for[0] or {}).get("model", "?")
                notes.append(f"engine compiled for {model} / OpenVINO {built_for[1]}; this is {here[0]['model']} / OpenVINO {here[1]}: "
                             "recompiling from its source ONNX")
                record = manifest.get("parent") or manifest.get("source") or {}  # schema 2 spells it parent
                source = Path(record.get("path", ""))
                if not source.is_file():
                    raise DeployResError(f"{engine_path.name} was built for another CPU or OpenVINO and its source {source} is gone; "
                                         "rebuild with `deployres build-engine --backend openvino`")
                recorded = record.get("sha256")
                if recorded and file_record(source)["sha256"] != recorded:
                    raise DeployResError(f"{engine_path.name} was built for another CPU or OpenVINO and its source {source.name} has changed "
                                         "since; rebuild with `deployres build-engine --backend openvino`")
                if precision == "bf16" and missing_bf16_isa():
                    notes.append(missing_bf16_isa())
                compiled = _compile(core, source, config)
        if own:
            _check_runs_as_built(compiled, precision, engine_path.name)
        streams = streams or int(compiled.get_property("NUM_STREAMS"))  # the hint's choice: 1 for latency
        return OpenVINORunner(compiled, notes, time.perf_counter() - start,
                              {"precision": precision, "threads": threads, "hint": hint, "streams": streams})


def _check_runs_as_built(compiled, precision: str, name: str) -> None:
    """A one-line error when the compiled model's convolutions do not run at the manifest's ``precision``: FP32
    runs every one in f32; BF16 and INT8 run at least one in bf16 / u8-i8 (BF16 on a CPU without it runs f32 and
    is already noted; an FP32 engine on a BF16 CPU would be BF16 if the hint were lost)."""
    runtime = runtime_precisions(compiled)
    run = _precisions_run(runtime)
    if not run or (precision == "bf16" and missing_bf16_isa()):
        return
    ok = run == {"fp32"} if precision == "fp32" else precision in run
    if not ok:
        conv = runtime["convolution"]
        raise DeployResError(f"manifest says precision {precision} but OpenVINO runs {name}'s convolutions as "
                             f"{', '.join(f'{n} {k}' for k, n in sorted(conv.items()))}: the manifest does not describe this engine; "
                             "rebuild it with `deployres build-engine --backend openvino`")


def _read(core, path: Path):
    try:
        return core.read_model(str(path))
    except Exception as exc:
        raise DeployResError(f"OpenVINO cannot read {path.name}: {str(exc).strip().splitlines()[0][:300]}") from None


def _compile_ir(core, path: Path, config: Mapping[str, Any]):
    try:  # a path, not a model, so that OpenVINO's cache applies
        return core.compile_model(str(path), "CPU", dict(config))
    except Exception as exc:
        raise DeployResError(f"OpenVINO cannot compile {path.name}: {str(exc).strip().splitlines()[0][:300]}") from None


def _compile(core, path: Path, config: Mapping[str, Any]):
    try:
        return core.compile_model(_read(core, path), "CPU", dict(config))
    except DeployResError:
        raise
    except Exception as exc:
        raise DeployResError(f"OpenVINO cannot compile {path.name}: {str(exc).strip().splitlines()[0][:300]}") from None
