"""Engine backends behind one interface (:mod:`deploy_res.engines.base`).

``get_backend("auto")`` picks TensorRT where a GPU and TensorRT are present,
else ONNX Runtime on the CPU; the build stage refines ``auto`` on a CPU by
measurement between ONNX Runtime and OpenVINO (:mod:`deploy_res.engines.choose`).
Asking for ``tensorrt`` where it cannot run fails at once with the reason and
what to use instead.

Modules above ``engines/`` reach the backends only through the functions
here: :func:`load_engine` (``with load_engine(path) as runner:``),
:func:`get_backend`, :func:`backend_of`, :func:`unavailable`, and the few
backend facts other stages need (:func:`cpu_fingerprint`,
:func:`missing_bf16_isa`, :func:`qdq_layout`, :func:`companions`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping, Optional

from deploy_res.core.facts import check_facts
from deploy_res.core.records import verify_record
from deploy_res.core.manifest import read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.engines.base import (PRECISIONS, Backend, BuildResult, LayerCounters, LayerProfilerHost, Runner, RunnerBase, TensorInfo,
                                     TraceProfiler)

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")


_BACKEND_CLASSES = {"onnxruntime": ("deploy_res.engines.onnxruntime.backend", "OnnxRuntimeBackend", False),
                    "openvino": ("deploy_res.engines.openvino.backend", "OpenVINOBackend", True),
                    "tensorrt": ("deploy_res.engines.tensorrt.backend", "TensorRTBackend", True)}
"""name: (its module, imported only when asked for, as a backend's own package may be missing here; its class;
whether ``get_backend(name)`` checks that it can run here, failing with the reason and the module's ``INSTEAD``)."""


def _module(name: str):
    """The module of the backend called ``name`` (not ``auto``); an unknown name is a one-line error."""
    if name not in _BACKEND_CLASSES:
        raise DeployResError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(_BACKEND_CLASSES[name][0])


def _backend(name: str) -> Backend:
    """A new backend called ``name`` (not ``auto``)."""
    return getattr(_module(name), _BACKEND_CLASSES[name][1])()


def get_backend(name: str = "auto") -> Backend:
    """The backend called ``name``; ``auto`` = TensorRT if it can run here, else ONNX Runtime."""
    if name == "auto":
        tensorrt = _backend("tensorrt")
        return tensorrt if tensorrt.available() is None else _backend("onnxruntime")
    backend = _backend(name)
    reason = backend.available() if _BACKEND_CLASSES[name][2] else None
    if reason:
        raise DeployResError(f"--backend {name} cannot run here: {reason}; {_module(name).INSTEAD}")
    return backend


def unavailable(name: str) -> Optional[str]:
    """``None`` if backend ``name`` can build and run here, else the one-line reason it cannot (nothing raised)."""
    return _backend(name).available()


def backend_of(artifact: str | Path) -> str:
    """Which backend runs ``artifact``: from its manifest, else from its suffix (.plan -> tensorrt)."""
    manifest = read_manifest(artifact)
    if manifest is not None and manifest.backend:
        return manifest.backend
    if str(artifact).endswith(".xml"):
        return "openvino"
    return "tensorrt" if str(artifact).endswith((".plan", ".engine", ".trt")) else "onnxruntime"


ONNX_BACKENDS = ("onnxruntime", "openvino")
"""Backends that run a plain ONNX file directly (``load_engine(path, backend=...)``)."""


def load_engine(artifact: str | Path, backend: Optional[str] = None, **options: Any) -> Runner:
    """Load any artifact the pipeline writes (ONNX file, ONNX Runtime engine, OpenVINO IR, TensorRT plan) into a runner.

    Use it as ``with load_engine(path) as runner:`` (the runner closes on
    leaving the block, also on an error). ``options`` go to the backend's
    ``load`` (its ``OPTIONS``; ``threads`` and ``device`` are taken by all).

    An engine (an artifact with a ``build-engine`` manifest) must match the sha256 its manifest recorded, else
    a one-line error naming it: the manifest's CPU, source and lineage would describe another file. Then every
    fact the manifest states that the file itself can tell (precision, input and output names and shapes,
    backend) must be the file's (:func:`deploy_res.core.facts.check_facts`), else a one-line error naming both;
    an empty or unreadable ONNX file says so in one line.

    ``backend`` (default: the artifact's own, :func:`backend_of`) runs a plain
    ONNX file (raw, optimised, FP16 or Q/DQ) on one of :data:`ONNX_BACKENDS`
    instead of ONNX Runtime; an engine always runs on the backend it was built
    for, so naming another is a one-line error.
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise DeployResError(f"artifact {artifact} not found")
    manifest = read_manifest(artifact) or {}
    if manifest.get("stage") == "build-engine":
        verify_record(artifact, manifest.get("artifact"), "engine", "rebuild it with `deployres build-engine`")
    check_facts(artifact, manifest)  # the manifest's precision, inputs, outputs and backend are the file's own, or one line
    name = backend_of(artifact)
    if backend is not None and backend != name:
        if manifest.get("engine") or artifact.suffix != ".onnx":
            raise DeployResError(f"{artifact.name} is a {name} engine and runs on {name} only; --backend {backend} is for plain ONNX files "
                                 f"(or build one: deployres build-engine --backend {backend})")
        if backend not in ONNX_BACKENDS:
            raise DeployResError(f"--backend {backend} does not run an ONNX file directly; choose {' or '.join(ONNX_BACKENDS)}, "
                                 f"or build an engine: deployres build-engine --backend {backend}")
        name = backend
    return get_backend(name).load(artifact, **options)


def cpu_fingerprint() -> dict[str, Any]:
    """This CPU as a CPU engine depends on it: architecture, model name, vector-ISA flags."""
    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint as fingerprint

    return fingerprint()


def missing_bf16_isa(fingerprint: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """``None`` if this CPU (or the one ``fingerprint`` describes) runs BF16 natively, else the one line saying why not."""
    from deploy_res.engines.openvino.backend import missing_bf16_isa as missing

    return missing(fingerprint)


def qdq_layout(backend: str) -> str:
    """The Q/DQ layout (:func:`deploy_res.engines.precision.qdq.emit_qdq` target) ``backend``'s INT8 engines are built from."""
    if backend == "openvino":
        from deploy_res.engines.openvino.backend import QDQ_LAYOUT

        return QDQ_LAYOUT
    return backend


def companions(engine_path: str | Path, backend: str) -> tuple[list[str], list[Path]]:
    """``(file names, folders)`` beside ``engine_path`` that belong to it (OpenVINO: the ``.bin`` weights and the compiled-model cache)."""
    engine_path = Path(engine_path)
    if backend != "openvino":
        return [], []
    from deploy_res.engines.openvino.backend import cache_dir_of

    return [engine_path.with_suffix(".bin").name], [cache_dir_of(engine_path)]


__all__ = ["BACKENDS", "ONNX_BACKENDS", "PRECISIONS", "Backend", "BuildResult", "LayerCounters", "LayerProfilerHost", "Runner", "RunnerBase",
           "TensorInfo", "TraceProfiler", "backend_of", "companions", "cpu_fingerprint", "get_backend", "load_engine", "missing_bf16_isa",
           "qdq_layout", "unavailable"]
