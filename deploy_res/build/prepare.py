"""The float graph a build starts from: the graph passes a backend and precision need, applied once and reused only when verified."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional

from deploy_res.core.errors import DeployResError
from deploy_res.core.manifest import manifest_path
from deploy_res.core.records import matches_record, verify_record
from deploy_res.core.manifest import Manifest, read_manifest
from deploy_res.core.names import model_stem, optimized_name


def pass_target(backend: str, precision: str) -> str:
    """Which graph-pass target the float graph needs before precision and build.

    ``tensorrt`` for TensorRT; ``portable`` (standard ops, BatchNorm folded) for OpenVINO, which reads no
    ``com.microsoft`` fusions, and for ONNX Runtime's FP16 and INT8; ``onnxruntime`` for its FP32 engine.
    """
    if backend == "tensorrt":
        return "tensorrt"
    if backend == "openvino":
        return "portable"
    return "onnxruntime" if precision == "fp32" else "portable"


def prepared_graph(source: Path, target: str, folder: Path, status: Callable, notes: list[str],
                   input_shapes: Optional[Mapping] = None) -> Path:
    """The float graph with ``target``'s passes applied: ``source`` itself if it already is, else optimised now.

    Nothing is reused on its manifest's word: an optimised input must still be the file its manifest
    recorded (else a one-line error), the raw export it names must match the sha256 recorded for it, and a
    prepared graph left by an earlier build is reused only when both it and its input match their recorded
    sha256; otherwise it is rebuilt (and ``notes`` says so).
    """
    from deploy_res.optimize import OptimizeSettings, optimize_file

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
    output = folder / optimized_name(model_stem(source), target)
    existing = read_manifest(output) if output.is_file() else None
    if existing and existing.get("settings", {}).get("target") == target and matches_record(source, existing.parent):
        if matches_record(output, existing.get("artifact")):
            return output
        notes.append(f"{output.name} differs from the sha256 its manifest recorded: rebuilt it")
    with status(f"graph passes for {target}"):
        optimize_file(source, output, OptimizeSettings(target=target, input_shapes=input_shapes))
    return output
