"""The optimise stage: verified graph passes over any ONNX file, with a manifest.

``optimize_file("out/resnet50.onnx", "out/resnet50.opt.onnx")`` runs the
passes of :mod:`deploy_res.exporters.pass_runner` for a target, each checked numerically,
and writes the optimised ONNX with a manifest holding the per-pass report and
the source model's lineage (PyTorch source, preprocessing, batch range).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from deploy_res.core.artifact import write_artifact
from deploy_res.core.records import file_record
from deploy_res.core.manifest import Manifest, lineage, read_manifest
from deploy_res.core.onnx_io import save_onnx
from deploy_res.core.errors import DeployResError
from deploy_res.core.names import optimized_beside
from deploy_res.exporters.checks import onnx_check
from deploy_res.exporters.checks import DEFAULT_BATCH as DEFAULT_CHECK_BATCH, DEFAULT_SEED
from deploy_res.exporters.pass_runner import CHECKED_WHEN_SAVED, DEFAULT_TARGET, TARGETS, optimize
from deploy_res.exporters.report import render_report

__all__ = ["OptimizeSettings", "optimize_file", "render_report", "named_input_shapes"]


@dataclass(frozen=True)
class OptimizeSettings:
    """One run of the graph passes; every field has the command line's default.

    target: the runtime the passes prepare the graph for, ``onnxruntime`` (default), ``tensorrt`` or ``portable``.
    batch: batch size of the numerical checks (default 2; a fixed batch axis keeps its own).
    input_shapes: ``{input name or None: full shape}`` for inputs whose non-batch axes are dynamic (default None;
        None names the model's only input).
    rtol: the checks' tolerance relative to the largest output (default None: 1e-4, 5e-3 for a graph computing in float16).
    atol: absolute tolerance added to it (default 0). seed: seed of the check inputs (default 0).
    """

    target: str = DEFAULT_TARGET
    batch: int = DEFAULT_CHECK_BATCH
    input_shapes: Optional[Mapping[Optional[str], Sequence[int]]] = field(default=None, hash=False)
    rtol: Optional[float] = None
    atol: float = 0.0
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise DeployResError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.batch < 1:
            raise DeployResError(f"batch must be at least 1, got {self.batch}")


def optimize_file(source: str | Path, output: Optional[str | Path] = None, settings: OptimizeSettings = OptimizeSettings()) -> Manifest:
    """Optimise ``source`` as ``settings`` say into ``output`` (default ``<stem>.opt.onnx`` beside it); return its manifest.

    The passes and their checks are :func:`deploy_res.exporters.pass_runner.optimize`'s. The model and its
    manifest (the source's lineage, the source file, the settings, the pass report) are placed as one unit;
    external data only past protobuf's 2 GB limit, and then the ONNX checker reads the file.
    """
    source = Path(source)
    if not source.is_file():
        raise DeployResError(f"ONNX file {source} not found")
    shapes = named_input_shapes(source, settings.input_shapes) if settings.input_shapes else None
    output = Path(output) if output else optimized_beside(source)
    if output.resolve() == source.resolve():
        raise DeployResError("the output would overwrite the input; pass another -o/--output")
    model, report = optimize(source, target=settings.target, batch=settings.batch, rtol=settings.rtol, atol=settings.atol,
                             input_shapes=shapes, seed=settings.seed)
    with write_artifact(output) as pending:
        save_onnx(model, pending.path)
        if report["onnx_checker"] == CHECKED_WHEN_SAVED:
            onnx_check(str(pending.path))
            report["onnx_checker"] = "passed"
        pending.set_manifest("optimize", {
            **lineage(read_manifest(source)),
            "inputs": {"onnx": file_record(source)},
            "settings": {key: report[key] for key in ("target", "batch", "seed", "rtol", "atol", "input_shapes")},
            "check": {"passes": report},
        })
    return read_manifest(output)


def named_input_shapes(source: str | Path, shapes: Mapping[Optional[str], Sequence[int]]) -> dict[str, list[int]]:
    """``{input name: full shape}``; a shape keyed ``None`` (``--input-shape N,C,H,W`` without a name) is the
    model's only input's, a one-line error when the model has several."""
    named = {name: [int(d) for d in shape] for name, shape in shapes.items() if name is not None}
    if None not in shapes:
        return named
    import onnx

    try:
        graph = onnx.load(str(source), load_external_data=False).graph
    except Exception:  # DecodeError and friends
        raise DeployResError(f"{source} is not a valid ONNX model; re-export it") from None
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise DeployResError(f"{Path(source).name} has {len(inputs)} inputs ({', '.join(inputs)}); name the one to shape: --input-shape NAME:N,C,H,W")
    return {inputs[0]: [int(d) for d in shapes[None]], **named}
