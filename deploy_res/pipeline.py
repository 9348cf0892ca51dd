"""``deployres run``: export -> optimise -> build -> validate -> profile in one command.

For a zoo model without ``weights`` the run first re-estimates the model's
BatchNorm statistics on real photos (:mod:`deploy_res.demo`), so that INT8
calibration and validation see activations like a trained network's. Its
classifier is still untrained, its logits near ties, so for that demo
checkpoint the reduced-precision engines are judged on cosine and error, and
top-1 agreement is reported but not judged; with real ``weights`` every
default limit applies. Without
``calib_data``, INT8 calibrates on random crops of scikit-image's sample
photos; validation always uses other crops of those photos (a different seed),
never the calibration ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from deploy_res.build.settings import DEFAULT_CALIB_SAMPLES, BuildSettings
from deploy_res.core.errors import DeployResError
from deploy_res.core.files import output_folder
from deploy_res.exporters.torch_export import DEFAULT_EXPORTER
from deploy_res.profiling.settings import DEFAULT_DURATION_S, ProfileSettings

if TYPE_CHECKING:
    from deploy_res.export import ExportSettings

CALIB_SEED = 0
EVAL_SEED = 7
DEFAULT_EVAL_SAMPLES = 128
"""Held-out crops per engine: the fewest from which the 5th-percentile cosine gets a lower bound (72) with room."""


@dataclass(frozen=True)
class RunSettings:
    """What ``deployres run`` is told; every field has the command line's default.

    precisions: the engines to build, ``fp32`` always first (default ``("fp32",)``; add ``int8``, ``fp16``, ``bf16``:
        BF16 is left out with one line on a CPU without native BF16).
    weights: a checkpoint (default None: the zoo model with BatchNorm re-estimated on real photos).
    calib_data, calib_samples, fallback_layers, target_agreement: INT8's, as in :class:`~deploy_res.build.BuildSettings`
        (default: 128 random crops of scikit-image's sample photos, no fallback).
    backend: ``auto`` (default), ``onnxruntime``, ``openvino`` or ``tensorrt``.
    eval_samples: held-out photo crops each engine is validated on (default 128; unlabelled, so reduced precisions are
        judged on agreement with the original, never reported as an accuracy result).
    batches, duration_s, warmup_s: the profile's batch sizes (default 1 and 8), timed seconds per batch size
        (default 5) after an untimed warm-up (default 1 s).
    torch_modes: the PyTorch original in the comparison (default ``("eager",)``; ``()`` leaves it out).
    exporter, input_size, mean, std: as ``deployres export`` (default dynamo; the zoo's input size and normalisation,
        ImageNet's for a factory or a program file).
    bn_recalibrate: re-estimate the zoo model's BatchNorm statistics when no weights are given (default True; not with
        ``num_classes`` and no weights: the demo checkpoint has the zoo's 1000-class head).
    num_classes, trust_pickle, labels: as ``deployres export`` (default None: the checkpoint's head, else the zoo's;
        False; no class names).
    """

    precisions: tuple[str, ...] = ("fp32",)
    weights: Optional[Path] = None
    calib_data: Optional[Path] = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    fallback_layers: Optional[int] = None
    target_agreement: Optional[float] = None
    backend: str = "auto"
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    batches: tuple[int, ...] = ProfileSettings.batches
    duration_s: float = DEFAULT_DURATION_S
    warmup_s: float = ProfileSettings.warmup_s
    torch_modes: tuple[str, ...] = ("eager",)
    exporter: str = DEFAULT_EXPORTER
    input_size: Optional[tuple[int, int, int]] = None
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    bn_recalibrate: bool = True
    num_classes: Optional[int] = None
    trust_pickle: bool = False
    labels: Optional[Path] = None

    def __post_init__(self) -> None:
        if (self.fallback_layers is not None or self.target_agreement is not None) and "int8" not in self.precisions:
            raise DeployResError("--fallback-layers and --target-agreement go with --int8")
        from deploy_res.validation import ValidateSettings

        # Every stage's settings check themselves now, before any work.
        if not self.precisions or self.precisions[0] != "fp32":
            raise DeployResError(f"precisions must start with fp32 (the baseline every other engine is compared with), got {self.precisions}")
        for precision in self.precisions:
            self.build_settings(precision, calib_data=self.calib_data or Path("calib"))
        self.export_settings(self.weights)
        ValidateSettings(samples=self.eval_samples)
        ProfileSettings(batches=self.batches, warmup_s=self.warmup_s, duration_s=self.duration_s, torch_modes=self.torch_modes)

    def export_settings(self, weights: Optional[Path]) -> "ExportSettings":
        """The export settings of the run, from ``weights`` (the user's, or the demo checkpoint)."""
        from deploy_res.export import ExportSettings

        preprocessing = None
        if self.mean or self.std:  # imported only then: deploy_res.models imports torch
            from deploy_res.models import Preprocessing

            base = Preprocessing()
            preprocessing = Preprocessing(base.input_size, self.mean or base.mean, self.std or base.std, base.crop_pct, base.interpolation)
        return ExportSettings(weights=weights, exporter=self.exporter, input_size=self.input_size, num_classes=self.num_classes,
                              trust_pickle=self.trust_pickle, preprocessing=preprocessing, labels=self.labels)

    def build_settings(self, precision: str, calib_data: Optional[Path] = None) -> BuildSettings:
        """The build settings of the ``precision`` engine (INT8's calibrates on ``calib_data``)."""
        int8 = precision == "int8"
        return BuildSettings(precision=precision, backend=self.backend, calib_data=calib_data if int8 else None, calib_samples=self.calib_samples,
                             fallback_layers=self.fallback_layers if int8 else None, target_agreement=self.target_agreement if int8 else None)


@dataclass
class RunResult:
    """Everything ``run`` wrote and concluded."""

    output_dir: Path
    onnx: Optional[Path] = None
    engines: dict[str, Path] = field(default_factory=dict)
    validations: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: Optional[dict[str, Any]] = None
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @property
    def outcome(self) -> str:
        """``fail`` if any engine failed validation, ``pass`` if all passed, else ``inconclusive``."""
        outcomes = {v["outcome"] for v in self.validations.values()}
        return "fail" if "fail" in outcomes else "pass" if outcomes <= {"pass"} else "inconclusive"


def run_pipeline(model: str, output_dir: str | Path, settings: RunSettings = RunSettings(), quiet: bool = False, console: Any = None,
                 step: Callable[[str], None] = lambda message: None) -> RunResult:
    """Run the whole pipeline for ``model`` into ``output_dir`` as ``settings`` say; see the module docstring.

    ``step(message)`` is called as each step starts; a status line is shown on ``console`` unless ``quiet``.
    When a stage raises (bad input, Ctrl-C before the profile), an ``output_dir`` the run created is removed with
    everything in it; one that existed before is left as it was, with what the run wrote so far.
    """
    from deploy_res.build import build_engine
    from deploy_res.engines import backend_of
    from deploy_res.data.inputs import check_source
    from deploy_res.data.photos import sample_inputs, write_random_crops
    from deploy_res.demo import bn_recalibrated_checkpoint
    from deploy_res.export import ExportSettings, export
    from deploy_res.exporters.torch_export import check_input_shape
    from deploy_res.loading import get_spec_or_none
    from deploy_res.models import Preprocessing
    from deploy_res.profiling import profile
    from deploy_res.validation import ValidateSettings, validate

    start = time.perf_counter()
    input_size = check_input_shape(settings.input_size) if settings.input_size else None  # refused before the BatchNorm re-estimation allocates inputs of that size
    precisions, weights, calib_data = list(settings.precisions), settings.weights, settings.calib_data
    if "int8" in precisions and calib_data is not None:  # a bad --calib-data fails before the export, not after it
        check_source(calib_data, settings.calib_samples, what="calibration data")
    if settings.labels is not None:  # a bad names file fails before any work (their count is checked at export)
        from deploy_res.data.class_names import read_class_names

        read_class_names(settings.labels)
    # a folder this run creates is removed again if any stage fails on the way (a folder that was there stays)
    with output_folder(output_dir) as folder:
        result = RunResult(folder)
        demo_weights = weights is None and settings.bn_recalibrate and get_spec_or_none(model) is not None and settings.num_classes is None
        if demo_weights:
            step(f"re-estimating {model}'s BatchNorm statistics on real photos")
            weights = bn_recalibrated_checkpoint(model, folder / "weights", input_size=input_size)

        step(f"exporting {model} to ONNX (parity-checked) and running the graph passes")
        exported = export(model, folder, replace(settings.export_settings(weights), input_size=input_size))
        for note in exported.notes:
            step(note)
        result.onnx = exported.onnx_path

        pre = Preprocessing.from_dict(exported.manifest["preprocessing"])
        if "int8" in precisions and calib_data is None:
            step(f"writing {settings.calib_samples} calibration crops of scikit-image's sample photos")
            calib_data = folder / "calib"
            write_random_crops(calib_data, settings.calib_samples, seed=CALIB_SEED, size=pre.resize_size)
        eval_path = folder / "eval" / "inputs.npy"
        eval_path.parent.mkdir(exist_ok=True)
        np.save(eval_path, sample_inputs(settings.eval_samples, pre, seed=EVAL_SEED))

        if "bf16" in precisions:
            from deploy_res.engines import missing_bf16_isa

            missing = missing_bf16_isa()
            if missing:  # one line, and the other engines still get built
                step(f"{missing}: no BF16 engine")
                precisions = [p for p in precisions if p != "bf16"]
        for precision in precisions:
            step(f"building the {precision} engine")
            built = build_engine(exported.final_path, folder, settings.build_settings(precision, calib_data), quiet=quiet, console=console)
            for note in built.notes:
                step(note)
            result.engines[precision] = built.engine
            step(f"validating the {precision} engine against PyTorch on {settings.eval_samples} held-out photo crops")
            limits = {"top1_agreement": None} if demo_weights and precision != "fp32" else None
            result.validations[precision] = validate(built.engine, ValidateSettings(data=str(eval_path), samples=settings.eval_samples, limits=limits))
            if limits:
                result.validations[precision]["note"] = "demo checkpoint with an untrained classifier: top-1 agreement reported, not judged"

        artifacts = list(result.engines.values())
        fp32 = result.engines.get("fp32")
        if fp32 is not None and backend_of(fp32) == "openvino" and settings.backend in ("auto", "openvino"):
            step("building the ONNX Runtime FP32 engine as the baseline of the comparison")
            artifacts.insert(0, build_engine(exported.final_path, folder, BuildSettings(backend="onnxruntime"), quiet=quiet, console=console).engine)
        step("profiling the engines" + (" and the PyTorch original" if settings.torch_modes else ""))
        measured = ProfileSettings(batches=settings.batches, warmup_s=settings.warmup_s, duration_s=settings.duration_s, torch_modes=settings.torch_modes)
        result.report = profile(artifacts, measured, validation_results=list(result.validations.values()),
                                output_dir=folder / "report", quiet=quiet, console=console)
        result.interrupted = result.report.get("status") == "interrupted"
    result.seconds = time.perf_counter() - start
    return result
