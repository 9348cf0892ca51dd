"""The optimise stage: verified graph passes over any ONNX file, with a manifest.

``optimize_file("out/resnet50.onnx", "out/resnet50.opt.onnx")`` runs the
passes of :mod:`deploy_res.exporters.pass_runner` for a target, each checked numerically,
and writes the optimised ONNX with a manifest holding the per-pass report and
the source model's lineage (PyTorch source, preprocessing, batch range).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from deploy_res.core.manifest import read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.exporters.pass_runner import DEFAULT_TARGET, optimize
from deploy_res.exporters.report import render_report

__all__ = ["optimize_file", "render_report", "default_output", "named_input_shapes"]


def default_output(source: Path) -> Path:
    """``model.onnx`` -> ``model.opt.onnx`` beside it."""
    return source.with_name(source.name[: -len(".onnx")] + ".opt.onnx" if source.name.endswith(".onnx") else source.name + ".opt.onnx")


def optimize_file(source: str | Path, output: Optional[str | Path] = None, target: str = DEFAULT_TARGET, **options: Any) -> dict[str, Any]:
    """Optimise ``source`` for ``target`` into ``output`` (default ``<stem>.opt.onnx``); return the manifest.

    ``options`` go to :func:`deploy_res.exporters.pass_runner.optimize` (batch, rtol, atol, input_shapes, seed);
    an ``input_shapes`` entry keyed ``None`` is the shape of the model's only input (:func:`named_input_shapes`).
    """
    source = Path(source)
    if not source.is_file():
        raise DeployResError(f"ONNX file {source} not found")
    if options.get("input_shapes"):
        options["input_shapes"] = named_input_shapes(source, options["input_shapes"])
    output = Path(output) if output else default_output(source)
    if output.resolve() == source.resolve():
        raise DeployResError("the output would overwrite the input; pass another -o/--output")
    optimize(source, output, target=target, **options)  # writes the model and its manifest
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
