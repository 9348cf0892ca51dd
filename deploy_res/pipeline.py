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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from deploy_res.core.files import ensure_output_dir

CALIB_SEED = 0
EVAL_SEED = 7
DEFAULT_EVAL_SAMPLES = 64


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
        return all(v["passed"] for v in self.validations.values())


def run_pipeline(
    model: str,
    output_dir: str | Path,
    precisions: Sequence[str] = ("fp32",),
    weights: Optional[str | Path] = None,
    calib_data: Optional[str | Path] = None,
    calib_samples: int = 128,
    fallback_layers: Optional[int] = None,
    target_agreement: Optional[float] = None,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    backend: str = "auto",
    batches: Sequence[int] = (1, 8),
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    torch_modes: Sequence[str] = ("eager",),
    bn_recalibrate: bool = True,
    exporter: str = "dynamo",
    input_size: Optional[tuple[int, int, int]] = None,
    quiet: bool = False,
    console: Any = None,
    step: Callable[[str], None] = lambda message: None,
) -> RunResult:
    """Run the whole pipeline for ``model`` into ``output_dir``; see the module docstring.

    Defaults: FP32 only (add ``"int8"``/``"fp16"``/``"bf16"`` to ``precisions``; BF16 is
    left out with one line on a CPU without native BF16), 128
    calibration samples (``fallback_layers`` / ``target_agreement`` as in
    :func:`deploy_res.build.build_engine`), 64 evaluation crops, backend auto, batches 1 and 8,
    5 s of timing per batch size after 1 s of warm-up, the PyTorch original
    (eager) in the comparison.
    """
    from deploy_res.build import build_engine
    from deploy_res.engines import backend_of
    from deploy_res.data.inputs import check_source
    from deploy_res.data.photos import sample_inputs, write_random_crops
    from deploy_res.demo import bn_recalibrated_checkpoint
    from deploy_res.export import export
    from deploy_res.exporters.torch_export import check_input_shape
    from deploy_res.models import Preprocessing
    from deploy_res.profiling import profile
    from deploy_res.validation import validate

    start = time.perf_counter()
    if input_size is not None:  # refused before the BatchNorm re-estimation allocates inputs of that size
        input_size = check_input_shape(input_size)
    if "int8" in precisions and calib_data is not None:  # a bad --calib-data fails before the export, not after it
        check_source(calib_data, calib_samples, what="calibration data")
    folder = ensure_output_dir(output_dir)
    result = RunResult(folder)
    demo_weights = weights is None and bn_recalibrate and ":" not in model
    if demo_weights:
        step(f"re-estimating {model}'s BatchNorm statistics on real photos")
        weights = bn_recalibrated_checkpoint(model, folder / "weights", input_size=input_size)

    step(f"exporting {model} to ONNX (parity-checked) and running the graph passes")
    exported = export(model, folder, weights=weights, exporter=exporter, input_size=input_size)
    result.onnx = exported.onnx_path

    pre = Preprocessing.from_dict(exported.manifest["preprocessing"])
    if "int8" in precisions and calib_data is None:
        step(f"writing {calib_samples} calibration crops of scikit-image's sample photos")
        calib_data = folder / "calib"
        write_random_crops(calib_data, calib_samples, seed=CALIB_SEED, size=pre.resize_size)
    eval_path = folder / "eval" / "inputs.npy"
    eval_path.parent.mkdir(exist_ok=True)
    np.save(eval_path, sample_inputs(eval_samples, pre, seed=EVAL_SEED))

    if "bf16" in precisions:
        from deploy_res.engines import missing_bf16_isa

        missing = missing_bf16_isa()
        if missing:  # one line, and the other engines still get built
            step(f"{missing}: no BF16 engine")
            precisions = [p for p in precisions if p != "bf16"]
    for precision in precisions:
        step(f"building the {precision} engine")
        built = build_engine(exported.onnx_path, folder, backend=backend, precision=precision,
                             calib_data=calib_data if precision == "int8" else None, calib_samples=calib_samples,
                             fallback_layers=fallback_layers if precision == "int8" else None,
                             target_agreement=target_agreement if precision == "int8" else None,
                             quiet=quiet, console=console)
        for note in built.notes:
            step(note)
        result.engines[precision] = built.engine
        step(f"validating the {precision} engine against PyTorch on {eval_samples} held-out photo crops")
        limits = {"top1_agreement": None} if demo_weights and precision != "fp32" else None
        result.validations[precision] = validate(built.engine, data=str(eval_path), samples=eval_samples, thresholds=limits)
        if limits:
            result.validations[precision]["note"] = "demo checkpoint with an untrained classifier: top-1 agreement reported, not judged"

    artifacts = list(result.engines.values())
    fp32 = result.engines.get("fp32")
    if fp32 is not None and backend_of(fp32) == "openvino" and backend in ("auto", "openvino"):
        step("building the ONNX Runtime FP32 engine as the baseline of the comparison")
        artifacts.insert(0, build_engine(exported.onnx_path, folder, backend="onnxruntime", quiet=quiet, console=console).engine)
    step("profiling the engines" + (" and the PyTorch original" if torch_modes else ""))
    result.report = profile(artifacts, batches=batches, warmup_s=warmup_s, duration_s=duration_s,
                            torch_modes=torch_modes, validation_results=list(result.validations.values()),
                            output_dir=folder / "report", quiet=quiet, console=console)
    result.interrupted = result.report.get("status") == "interrupted"
    result.seconds = time.perf_counter() - start
    return result
