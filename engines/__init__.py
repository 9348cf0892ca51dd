"""Engine backends behind one interface (:mod:`deploy_res.engines.base`).

``get_backend("auto")`` picks TensorRT where a GPU and TensorRT are present,
else ONNX Runtime on the CPU; the build stage refines ``auto`` on a CPU by
measurement between ONNX Runtime and OpenVINO (:mod:`deploy_res.engines.choose`).
Asking for ``tensorrt`` where it cannot run fails at once with the reason and
what to use instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_res.core.files import verify_record
from deploy_res.core.manifest import read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.engines.base import PRECISIONS, Backend, BuildResult, Runner, TensorInfo

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")
ENGINE_SUFFIXES = {"onnxruntime": ".ort.onnx", "openvino": ".ov.xml", "tensorrt": ".plan"}


def get_backend(name: str = "auto") -> Backend:
    """The backend called ``name``; ``auto`` = TensorRT if it can run here, else ONNX Runtime."""
    from deploy_res.engines.onnxruntime import OnnxRuntimeBackend
    from deploy_res.engines.tensorrt import TensorRTBackend

    if name == "auto":
        tensorrt = TensorRTBackend()
        return tensorrt if tensorrt.available() is None else OnnxRuntimeBackend()
    if name == "onnxruntime":
        return OnnxRuntimeBackend()
    if name == "openvino":
        from deploy_res.engines.openvino import OpenVINOBackend

        backend = OpenVINOBackend()
        reason = backend.available()
        if reason:
            raise DeployResError(f"--backend openvino cannot run here: {reason}; use --backend onnxruntime")
        return backend
    if name == "tensorrt":
        backend = TensorRTBackend()
        reason = backend.available()
        if reason:
            from deploy_res.engines.tensorrt.backend import INSTEAD

            raise DeployResError(f"--backend tensorrt cannot run here: {reason}; {INSTEAD}")
        return backend
    raise DeployResError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def backend_of(artifact: str | Path) -> str:
    """Which backend runs ``artifact``: from its manifest, else from its suffix (.plan -> tensorrt)."""
    manifest = read_manifest(artifact)
    if manifest is not None and manifest.backend:
        return manifest.backend
    if str(artifact).endswith(".xml"):
        return "openvino"
    return "tensorrt" if str(artifact).endswith((".plan", ".engine", ".trt")) else "onnxruntime"


def load_engine(artifact: str | Path, **options: Any) -> Runner:
    """Load any artifact the pipeline writes (ONNX file, ONNX Runtime engine, OpenVINO IR, TensorRT plan) into a runner.

    An engine (an artifact with a ``build-engine`` manifest) must match the sha256 its manifest recorded, else
    a one-line error naming it: the manifest's CPU, source and lineage would describe another file.
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise DeployResError(f"artifact {artifact} not found")
    manifest = read_manifest(artifact) or {}
    if manifest.get("stage") == "build-engine":
        verify_record(artifact, manifest.get("artifact"), "engine", "rebuild it with `deployres build-engine`")
    name = backend_of(artifact)
    return get_backend(name).load(artifact, **options)


__all__ = ["BACKENDS", "ENGINE_SUFFIXES", "PRECISIONS", "Backend", "BuildResult", "Runner", "TensorInfo", "backend_of", "get_backend", "load_engine"]
