"""ONNX Runtime engines: the model as ONNX Runtime optimised it for this machine, saved.

Like a TensorRT plan, an ONNX Runtime engine is specific to the hardware it
was built for: at ``ORT_ENABLE_ALL`` the CPU provider rewrites the graph into
a blocked (NCHWc) layout sized for the CPU's vector width, fuses Conv+Add+Relu
and pre-packs weights. Saving that graph makes a later session start several
times faster with the same latency. The manifest records the CPU and ONNX
Runtime version it was built for; loading on a different one says so (a note
on the runner, which validate and profile print and record in their JSON) and
re-optimises from the source ONNX, once it matches the sha256 the manifest
recorded, instead of running a layout meant for other hardware.

Providers: the CPU provider by default; ``device="cuda"`` asks for the CUDA
provider, which onnxruntime-gpu silently drops when its CUDA libraries are
missing: that fallback is detected and reported.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from deploy_res.core.files import atomic_path
from deploy_res.core.records import file_record, verify_record
from deploy_res.core.manifest import read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.core.numerics import session_options
from deploy_res.engines.base import BuildResult, RunnerBase, TensorInfo, check_options

_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(bool)": "bool"}


def cpu_fingerprint() -> dict[str, Any]:
    """This CPU as an engine depends on it: architecture, model name, the vector-ISA flags."""
    model, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"machine": platform.machine(), "model": model, "isa": sorted(f for f in _ISA_FLAGS if f in flags)}


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only, for sessions ORT's own tools open too: deployres reports failures in one line
    return ort


def _providers(device: str) -> list[str]:
    if device == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeRunner(RunnerBase):
    """A loaded ONNX Runtime engine (see the module docstring); a :class:`~deploy_res.engines.base.TraceProfiler`."""

    backend = "onnxruntime"

    def __init__(self, session, device: str, notes: list[str], load_seconds: float) -> None:
        super().__init__(notes, load_seconds)
        self.session = session
        self.device = device
        self.inputs = [TensorInfo(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in session.get_inputs()]
        self.outputs = [TensorInfo(o.name, tuple(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(None, dict(feeds))
        return {info.name: value for info, value in zip(self.outputs, values)}

    def end_profiling(self) -> Optional[str]:
        """Stop ONNX Runtime's profiler (load with ``profile_prefix``) and return its JSON file; ``None`` when it was off."""
        return (self.session.end_profiling() or None) if self.session is not None else None

    def close(self) -> None:
        self.session = None


def open_session(path: Path, device: str = "cpu", level: str = "ORT_ENABLE_ALL", threads: Optional[int] = None,
                 profile_prefix: Optional[str] = None) -> tuple[Any, list[str]]:
    """An InferenceSession on ``device``; notes say if the CUDA provider fell back to the CPU."""
    ort = _ort()
    notes: list[str] = []
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeployResError("device cuda needs onnxruntime-gpu (pip uninstall -y onnxruntime && pip install onnxruntime-gpu); use --device cpu")
    try:
        session = ort.InferenceSession(str(path), session_options(level, threads=threads, profile_prefix=profile_prefix), providers=_providers(device))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise DeployResError(f"ONNX Runtime cannot load {path.name}: {str(exc).strip().splitlines()[0][:300]}") from None
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        notes.append("the CUDA provider failed to start (CUDA/cuDNN libraries missing?); ONNX Runtime fell back to the CPU")
    return session, notes


class OnnxRuntimeBackend:
    """Build: optimise the ONNX at ORT_ENABLE_ALL for this machine and save it. Load: check the machine, run."""

    name = "onnxruntime"
    OPTIONS = frozenset({"device", "threads", "profile_prefix"})

    def available(self) -> Optional[str]:
        try:
            _ort()
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    def build(self, onnx_path: Path, engine_path: Path, settings: Mapping[str, Any]) -> BuildResult:
        """Settings: ``device`` ("cpu" default, or "cuda"), ``threads`` (ORT's default)."""
        device = settings.get("device", "cpu")
        start = time.perf_counter()
        notes: list[str] = []
        if device == "cpu":
            # ONNX Runtime writes the graph it optimised; its layout is this CPU's.
            with atomic_path(engine_path) as tmp:
                ort = _ort()
                try:
                    ort.InferenceSession(str(onnx_path), session_options("ORT_ENABLE_ALL", optimized_path=tmp), providers=["CPUExecutionProvider"])
                except Exception as exc:
                    raise DeployResError(f"ONNX Runtime cannot optimise {onnx_path.name}: {str(exc).strip().splitlines()[0][:300]}") from None
        else:
            # Provider-specific layouts are not saved for CUDA: the engine is the ONNX itself.
            session, notes = open_session(onnx_path, device)
            del session
            with atomic_path(engine_path) as tmp:
                tmp.write_bytes(Path(onnx_path).read_bytes())
        seconds = time.perf_counter() - start
        manifest = {
            "engine": {"backend": self.name, "device": device, "cpu": cpu_fingerprint(), "onnxruntime": _ort().__version__,
                       "optimization_level": "ORT_ENABLE_ALL" if device == "cpu" else "at load"},
            "source": file_record(onnx_path),
        }
        return BuildResult(engine_path, manifest, seconds, notes)

    def load(self, engine_path: Path, **options: Any) -> OnnxRuntimeRunner:
        """Open the engine; on a different CPU or ONNX Runtime, re-optimise from its source ONNX.

        Options: ``device`` ("cpu" or "cuda"; default the engine's), ``threads``
        (intra-op threads; default ONNX Runtime's), ``profile_prefix`` (turn on
        ONNX Runtime's profiler, writing ``<prefix>_*.json``; see ``end_profiling``).
        """
        check_options(self.name, options, self.OPTIONS)
        device: Optional[str] = options.get("device")
        threads: Optional[int] = options.get("threads")
        profile_prefix: Optional[str] = options.get("profile_prefix")
        engine_path = Path(engine_path)
        manifest = read_manifest(engine_path) or {}
        engine = manifest.get("engine", {})
        device = device or engine.get("device", "cpu")
        notes: list[str] = []
        path, level = engine_path, "ORT_DISABLE_ALL"  # already optimised at build
        if engine.get("backend") != self.name:
            path, level = engine_path, "ORT_ENABLE_ALL"  # a plain ONNX file: optimise at load
        elif device == "cpu":
            built_for = (engine.get("cpu"), engine.get("onnxruntime"))
            here = (cpu_fingerprint(), _ort().__version__)
            if built_for != here:
                source = Path(manifest.get("source", {}).get("path", ""))
                if not source.is_file():
                    raise DeployResError(f"{engine_path.name} was built for another CPU or ONNX Runtime and its source {source} is gone; rebuild with `deployres build-engine`")
                verify_record(source, manifest.get("source"), "engine source", f"{engine_path.name} was built for another CPU or ONNX Runtime; rebuild with `deployres build-engine`")
                notes.append(f"engine built for {built_for[0].get('model') if built_for[0] else '?'} / ORT {built_for[1]}; this is {here[0]['model']} / ORT {here[1]}: re-optimising from {source.name}")
                path, level = source, "ORT_ENABLE_ALL"
        else:
            level = "ORT_ENABLE_ALL"
        start = time.perf_counter()
        session, session_notes = open_session(path, device, level, threads, profile_prefix)
        return OnnxRuntimeRunner(session, device if not session_notes else "cpu", notes + session_notes, time.perf_counter() - start)
