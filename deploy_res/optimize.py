"""The optimise stage: verified graph passes over any ONNX file, with a manifest.

``optimize_file("out/resnet50.onnx", "out/resnet50.opt.onnx")`` runs the
passes of :mod:`deploy_res.exporters.optimize` for a target, each checked numerically,
and writes the optimised ONNX with a manifest holding the per-pass report and
the source model's lineage (PyTorch source, preprocessing, batch range).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from deploy_res.core.artifacts import read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.exporters.optimize import DEFAULT_TARGET, optimize, render_report

__all__ = ["optimize_file", "render_report", "default_output"]


def default_output(source: Path) -> Path:
    """``model.onnx`` -> ``model.opt.onnx`` beside it."""
    return source.with_name(source.name[: -len(".onnx")] + ".opt.onnx" if source.name.endswith(".onnx") else source.name + ".opt.onnx")


def optimize_file(source: str | Path, output: Optional[str | Path] = None, target: str = DEFAULT_TARGET, **options: Any) -> dict[str, Any]:
    """Optimise ``source`` for ``target`` into ``output`` (default ``<stem>.opt.onnx``); return the manifest.

    ``options`` go to :func:`deploy_res.exporters.optimize.optimize` (batch, rtol, atol, input_shapes, seed).
    """
    source = Path(source)
    if not source.is_file():
        raise DeployResError(f"ONNX file {source} not found")
    output = Path(output) if output else default_output(source)
    if output.resolve() == source.resolve():
        raise DeployResError("the output would overwrite the input; pass another -o/--output")
    optimize(source, output, target=target, **options)  # writes the model and its manifest
    return read_manifest(output)
