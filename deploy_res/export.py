"""The export stage: a PyTorch model becomes a verified ONNX file with a manifest.

``export("resnet50", "out/")`` writes ``out/resnet50.onnx`` (BatchNorm kept,
dynamic batch, parity-checked against PyTorch at batch 1 and 4) and, unless
``optimize=False``, ``out/resnet50.opt.onnx`` from the verified graph passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from deploy_res.core.artifact import write_artifact

from deploy_res.core.files import ensure_output_dir

from deploy_res.core.records import file_record
from deploy_res.core.names import optimized_name, source_stem
from deploy_res.core.errors import ValidationFailed
from deploy_res.loading import load_model
from deploy_res.models import Preprocessing
from deploy_res.exporters.torch_export import DEFAULT_EXPORTER, DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, PARITY_RTOL, BatchRange, check_input_shape, check_parity, export_onnx

DEFAULT_TARGET = "onnxruntime"


@dataclass
class ExportResult:
    """What ``export`` wrote: the raw ONNX, the optimised one (if any) and their manifests."""

    onnx_path: Path
    manifest: dict[str, Any]
    optimized_path: Optional[Path] = None
    optimized_manifest: Optional[dict[str, Any]] = None

    @property
    def final_path(self) -> Path:
        """The file the next stage should take: the optimised ONNX when there is one."""
        return self.optimized_path or self.onnx_path


def export(
    model: str,
    output_dir: str | Path,
    weights: Optional[str | Path] = None,
    input_size: Optional[tuple[int, int, int]] = None,
    batch_range: BatchRange = BatchRange(),
    opset: int = DEFAULT_OPSET,
    exporter: str = DEFAULT_EXPORTER,
    optimize: bool = True,
    target: str = DEFAULT_TARGET,
    preprocessing: Optional[Preprocessing] = None,
    rtol: float = PARITY_RTOL,
    name: Optional[str] = None,
) -> ExportResult:
    """Export ``model`` (zoo name or ``package.module:factory``) to ``output_dir``.

    Defaults: the zoo's input size and preprocessing (ImageNet 224 for a
    factory), batch range 1/8/32, opset 20, the dynamo exporter, parity
    tolerance 1e-3 of the largest logit, then the graph passes for
    ``target="onnxruntime"``. Raises :class:`ValidationFailed` if PyTorch and
    ONNX Runtime disagree; nothing is left on disk then.
    """
    if input_size is not None:
        input_size = check_input_shape(input_size)  # refused before any work starts
    folder = ensure_output_dir(output_dir)
    loaded = load_model(model, weights, preprocessing)
    pre = loaded.preprocessing
    if input_size is not None:
        pre = Preprocessing(tuple(input_size), pre.mean, pre.std, pre.crop_pct, pre.interpolation)
    input_shape = tuple(pre.input_size)
    stem = name or source_stem(model)
    onnx_path = folder / f"{stem}.onnx"

    # The ONNX is written to a temporary file, checked there, and placed with its manifest as one unit.
    with write_artifact(onnx_path) as pending:
        start = time.perf_counter()
        export_onnx(loaded.module, pending.path, input_shape, opset=opset, exporter=exporter)
        export_seconds = time.perf_counter() - start
        parity_batches = tuple(sorted({batch_range.min, min(4, batch_range.max)}))
        parity = check_parity(loaded.module, pending.path, input_shape, batches=parity_batches if len(parity_batches) > 1 else (1, 4), rtol=rtol)
        if not parity.passed:
            worst = max(parity.batches, key=lambda b: b["max_rel_error"])
            raise ValidationFailed(
                f"ONNX output differs from PyTorch at batch {worst['batch']}: max |diff| {worst['max_abs_error']:.3g} "
                f"is {worst['max_rel_error']:.3g} of the largest logit (limit {rtol:g}); try --exporter torchscript or another --opset"
            )
        manifest = {
            "model": {
                "source": model,
                "zoo": loaded.zoo,
                "family": loaded.family,
                "weights": file_record(loaded.weights) if loaded.weights else None,
                "init_seed": loaded.init_seed,
                "parameters": sum(p.numel() for p in loaded.module.parameters()),
            },
            "input": {"name": INPUT_NAME, "shape": ["batch", *input_shape], "dtype": "float32"},
            "output": {"name": OUTPUT_NAME},
            "batch_range": batch_range.to_dict(),
            "preprocessing": pre.to_dict(),
            "settings": {"exporter": exporter, "opset": opset, "batchnorm": "kept"},
            "check": {"parity": parity.to_dict()},
            "seconds": round(export_seconds, 2),
        }
        manifest = pending.set_manifest("export", manifest)
    result = ExportResult(onnx_path, manifest)
    if optimize:
        from deploy_res.optimize import optimize_file

        opt_path = folder / optimized_name(stem, target)
        result.optimized_manifest = optimize_file(onnx_path, opt_path, target=target)
        result.optimized_path = opt_path
    return result
