"""The export stage: a PyTorch model becomes a verified ONNX file with a manifest.

``export("resnet50", "out/")`` writes ``out/resnet50.onnx`` (BatchNorm kept,
dynamic batch, parity-checked against PyTorch at batch 1 and 4) and, unless
``ExportSettings(optimize=False)``, the verified graph passes' output,
``out/resnet50.opt.onnx`` (``resnet50.<target>.opt.onnx`` for ``tensorrt`` or
``portable``: :func:`deploy_res.core.names.optimized_name`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from deploy_res.core.artifact import write_artifact
from deploy_res.core.files import output_folder
from deploy_res.core.records import file_record
from deploy_res.core.names import optimized_name, source_stem
from deploy_res.core.errors import DeployResError, ValidationFailed
from deploy_res.data.class_names import check_class_count, read_class_names
from deploy_res.exporters.pass_runner import DEFAULT_TARGET, TARGETS
from deploy_res.exporters.torch_export import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS, INPUT_NAME, OUTPUT_NAME, PARITY_RTOL, BatchRange, check_input_shape, check_parity, export_onnx

if TYPE_CHECKING:  # the zoo imports torch; the command line reads these settings without it
    from deploy_res.models import Preprocessing


@dataclass
class ExportResult:
    """What ``export`` wrote: the raw ONNX, the optimised one (if any) and their manifests."""

    onnx_path: Path
    manifest: dict[str, Any]
    optimized_path: Optional[Path] = None
    optimized_manifest: Optional[dict[str, Any]] = None
    notes: tuple[str, ...] = ()

    @property
    def final_path(self) -> Path:
        """The file the next stage should take: the optimised ONNX when there is one."""
        return self.optimized_path or self.onnx_path


@dataclass(frozen=True)
class ExportSettings:
    """One export; every field has the command line's default.

    weights: a checkpoint (default None: the zoo model under its recorded seed, or the factory's own weights).
    input_size: C, H, W (default None: the zoo's, 3,224,224 for a factory).
    batch_range: the batch sizes engines are built for (default 1 / 8 / 32; the ONNX batch axis is always dynamic).
    opset: the ONNX opset (default 20). exporter: ``dynamo`` (default) or ``torchscript``.
    optimize: also run the graph passes for ``target`` (default True, ``onnxruntime``).
    preprocessing: of a factory model (default None: the zoo's, ImageNet's for a factory).
    rtol: parity tolerance, relative to the largest logit (default 1e-3).
    name: the file-name stem (default: the model's, :func:`deploy_res.core.names.source_stem`, without factory arguments).
    num_classes: the zoo model's classifier size (default None: the checkpoint's, else the zoo's; passed to a factory as
        ``num_classes=``); recorded in the manifest's ``model`` block.
    trust_pickle: load a checkpoint that is a whole pickled model, running its code (default False); recorded too.
    labels: class names, a text file with one per line or a folder of class sub-folders (default None: none);
        one name per classifier output, recorded as ``model.class_names`` (:mod:`deploy_res.data.class_names`).
    """

    weights: Optional[Path] = None
    input_size: Optional[tuple[int, int, int]] = None
    batch_range: BatchRange = BatchRange()
    opset: int = DEFAULT_OPSET
    exporter: str = DEFAULT_EXPORTER
    optimize: bool = True
    target: str = DEFAULT_TARGET
    preprocessing: Optional["Preprocessing"] = None
    rtol: float = PARITY_RTOL
    name: Optional[str] = None
    num_classes: Optional[int] = None
    trust_pickle: bool = False
    labels: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise DeployResError(f"--num-classes must be a whole number of at least 1, got {self.num_classes!r}")
        if self.trust_pickle and self.weights is None:
            raise DeployResError("--trust-pickle goes with --weights (the pickled checkpoint it trusts)")
        if not isinstance(self.batch_range, BatchRange):  # (min, opt, max)
            object.__setattr__(self, "batch_range", BatchRange(*self.batch_range))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", check_input_shape(self.input_size))  # refused before any work starts
        if self.exporter not in EXPORTERS:
            raise DeployResError(f"unknown exporter {self.exporter!r}; choose one of {', '.join(EXPORTERS)}")
        if self.target not in TARGETS:
            raise DeployResError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if not 13 <= self.opset <= 23:
            raise DeployResError(f"opset {self.opset} is outside 13-23 (per-channel Q/DQ needs 13; torch exports up to 23)")


def _output_size(module: Any, input_shape: tuple[int, ...]) -> int:
    """The classifier outputs of ``module``: one forward pass on a zero input."""
    import torch

    from deploy_res.exporters.torch_export import first_output

    with torch.no_grad():
        return int(first_output(module(torch.zeros((1, *input_shape)))).shape[-1])


def export(model: str, output_dir: str | Path, settings: ExportSettings = ExportSettings()) -> ExportResult:
    """Export ``model`` (zoo name, ``package.module:factory(ARGS)``, a TorchScript archive or a ``.pt2`` program) to ``output_dir`` as ``settings`` say.

    The raw export keeps BatchNorm and is checked against PyTorch at two batch sizes; then, unless
    ``optimize`` is off, the graph passes for ``target`` write the optimised file
    (:func:`deploy_res.core.names.optimized_name`). Raises
    :class:`ValidationFailed` if PyTorch and ONNX Runtime disagree; a failed export leaves no file and no folder it created.
    """
    from deploy_res.loading import load_model
    from deploy_res.models import Preprocessing

    input_size = settings.input_size
    class_names = read_class_names(settings.labels) if settings.labels is not None else None
    loaded = load_model(model, settings.weights, settings.preprocessing, num_classes=settings.num_classes, trust_pickle=settings.trust_pickle)
    pre = loaded.preprocessing
    if input_size is not None:
        pre = Preprocessing(tuple(input_size), pre.mean, pre.std, pre.crop_pct, pre.interpolation)
    input_shape = tuple(pre.input_size)
    if class_names is not None:
        check_class_count(class_names, loaded.num_classes or _output_size(loaded.module, input_shape), f"--labels {Path(settings.labels).name}", model)
    # After the model loads; a failed export or optimisation removes the folders it created.
    with output_folder(output_dir) as folder:
        return _export_into(folder, model, loaded, pre, class_names, settings)


def _export_into(folder: Path, model: str, loaded, pre, class_names, settings: ExportSettings) -> ExportResult:
    """:func:`export` once the model is loaded: the raw export, its parity check and the optimised file, into ``folder``."""
    input_shape, batch_range, opset, exporter, target = tuple(pre.input_size), settings.batch_range, settings.opset, settings.exporter, settings.target
    if loaded.program == "torchscript" and exporter == "dynamo":  # torch.onnx's dynamo exporter cannot take a ScriptModule
        exporter = "torchscript"
        loaded.notes += ("exporting it with the torchscript exporter (dynamo cannot export a ScriptModule)",)
    if loaded.program:
        model = str(Path(model).resolve())  # later stages rebuild it from the file, from any folder
    stem = settings.name or (Path(model).stem if loaded.program else source_stem(model.split("(", 1)[0]))
    onnx_path = folder / f"{stem}.onnx"

    # The ONNX is written to a temporary file, checked there, and placed with its manifest as one unit.
    with write_artifact(onnx_path) as pending:
        start = time.perf_counter()
        export_onnx(loaded.module, pending.path, input_shape, opset=opset, exporter=exporter)
        export_seconds = time.perf_counter() - start
        parity_batches = tuple(sorted({batch_range.min, min(4, batch_range.max)}))
        parity = check_parity(loaded.module, pending.path, input_shape, batches=parity_batches if len(parity_batches) > 1 else (1, 4), rtol=settings.rtol)
        if not parity.passed:
            worst = max(parity.batches, key=lambda b: b["max_rel_error"])
            raise ValidationFailed(
                f"ONNX output differs from PyTorch at batch {worst['batch']}: max |diff| {worst['max_abs_error']:.3g} "
                f"is {worst['max_rel_error']:.3g} of the largest logit (limit {settings.rtol:g}); try --exporter torchscript or another --opset"
            )
        manifest = {
            "model": {
                "source": model,
                "zoo": loaded.zoo,
                "family": loaded.family,
                "weights": file_record(loaded.weights) if loaded.weights else None,
                "init_seed": loaded.init_seed,
                "num_classes": loaded.num_classes,
                "trust_pickle": loaded.trust_pickle,
                "program": {"kind": loaded.program, **file_record(Path(model))} if loaded.program else None,
                "class_names": class_names,
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
    result = ExportResult(onnx_path, manifest, notes=loaded.notes)
    if settings.optimize:
        from deploy_res.optimize import OptimizeSettings, optimize_file

        opt_path = folder / optimized_name(stem, target)
        result.optimized_manifest = optimize_file(onnx_path, opt_path, OptimizeSettings(target=target))
        result.optimized_path = opt_path
    return result
