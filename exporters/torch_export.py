"""PyTorch -> ONNX with a dynamic batch axis, checked against PyTorch at two batch sizes.

Exporter choice (see README, "Export"): torch 2.13 offers the dynamo exporter
(the default of ``torch.onnx.export``, maintained) and the TorchScript
exporter (deprecated). Both fold BatchNorm into Conv when left to their own
devices; deployres asks both to keep it (dynamo: ``optimize=False``;
TorchScript: ``training=PRESERVE`` on an eval-mode model, which skips the
eval peephole) so that folding happens in deployres' own verified passes.
The default is ``dynamo``; ``torchscript`` exports about twice as fast.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:  # torch is imported where it runs: the command line reads this module's choices without it
    import torch

from deploy_res.core.errors import DeployResError, ValidationFailed
from deploy_res.core.numerics import EXPORT_PARITY_RTOL, cpu_session, max_errors
from deploy_res.core.onnx_io import save_onnx

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
DEFAULT_OPSET = 20
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PARITY_RTOL = EXPORT_PARITY_RTOL
"""Parity passes when max |torch - onnx| <= PARITY_RTOL * max |torch| (relative to the largest logit)."""
MAX_BATCH = 4096
"""The largest batch the exported dynamic axis declares (the dynamo exporter's ``Dim("batch", max=...)``)."""
MAX_INPUT_SIDE = 8192
MAX_INPUT_ELEMENTS = 3 * 4096 * 4096
"""Input sizes past these cannot be exported on an ordinary machine (the example batch alone would
need gigabytes); they are refused before any work starts."""


def check_input_shape(input_shape) -> tuple[int, int, int]:
    """``input_shape`` (C, H, W) as ints, or a one-line error if it is not three positive sizes a machine can export."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DeployResError(f"input size {input_shape} must be three positive integers C,H,W")
    elements = shape[0] * shape[1] * shape[2]
    if max(shape[1:]) > MAX_INPUT_SIDE or elements > MAX_INPUT_ELEMENTS:
        raise DeployResError(f"input size {','.join(map(str, shape))} is too large to export ({elements:,} values per sample; "
                             f"at most {MAX_INPUT_SIDE} per side and {MAX_INPUT_ELEMENTS:,} values); give the size the model serves, e.g. 3,224,224")
    return shape


@dataclass(frozen=True)
class BatchRange:
    """Batch sizes an engine must serve: min / opt / max. Default 1 / 8 / 32."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise DeployResError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.min},{self.opt},{self.max}")
        if self.max > MAX_BATCH:
            raise DeployResError(f"batch range max {self.max} is beyond what the exported ONNX declares (at most {MAX_BATCH}); give a smaller max")

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass
class ParityResult:
    """PyTorch vs ONNX Runtime on the same seeded inputs, per batch size."""

    batches: list[dict[str, Any]] = field(default_factory=list)
    rtol: float = PARITY_RTOL

    @property
    def passed(self) -> bool:
        return all(b["passed"] for b in self.batches)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rtol": self.rtol, "inputs": "seeded standard normal", "batches": self.batches}


def export_onnx(
    module: torch.nn.Module,
    path: Path,
    input_shape: tuple[int, int, int],
    opset: int = DEFAULT_OPSET,
    exporter: str = DEFAULT_EXPORTER,
) -> onnx.ModelProto:
    """Export ``module`` (eval mode) to ``path`` with input ``input`` [batch, *input_shape]
    and output ``logits`` [batch, ...]; BatchNorm nodes are kept. Written atomically;
    external data (``<name>.data``) only past protobuf's 2 GB limit."""
    import torch
    if exporter not in EXPORTERS:
        raise DeployResError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    example = torch.randn(2, *check_input_shape(input_shape))
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_logger("torch"), _stderr_silenced():
            warnings.simplefilter("ignore")
            model = _export_dynamo(module, example, opset) if exporter == "dynamo" else _export_torchscript(module, example, opset)
    except DeployResError:
        raise
    except Exception as exc:
        raise DeployResError(f"{exporter} export failed: {_failure_cause(exc)}; try --exporter {'torchscript' if exporter == 'dynamo' else 'dynamo'}") from None
    _mark_batch_dynamic(model)
    save_onnx(model, path)
    return model


def _failure_cause(exc: BaseException) -> str:
    """An export failure as one line that keeps its cause: torch.onnx wraps the real error (``__cause__``)
    in a generic "Failed to export the model with torch.export ... Next steps:" message."""
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    first = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip().splitlines()
    text = first[0].strip() if first else ""
    if root is not exc or not text:
        text = f"{type(root).__name__}: {text}" if text else type(root).__name__
    return text[:300]


@contextlib.contextmanager
def _stderr_silenced():
    """Keep what torch writes to stderr while it exports (log lines, graph dumps, C++ warnings) off the
    user's terminal: deployres reports a failure itself, in one line. Both ``sys.stderr`` and file
    descriptor 2 are redirected (torch's log handlers hold the original stream)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing to silence
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.__stderr__.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Silence a library logger's warnings (torch.onnx reports skipped torchvision ops)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _export_dynamo(module: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    import torch
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        optimize=False,  # keep BatchNormalization for deployres' own passes
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    return program.model_proto


def _export_torchscript(module: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    import torch
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        buffer,
        dynamo=False,
        opset_version=opset,
        training=torch.onnx.TrainingMode.PRESERVE,  # eval-mode model: BN kept, not folded
        do_constant_folding=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )
    return onnx.load_from_string(buffer.getvalue())


def _mark_batch_dynamic(model: onnx.ModelProto) -> None:
    """Name the leading axis of every graph input and output ``batch``."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"


def check_parity(
    module: torch.nn.Module,
    onnx_path: Path,
    input_shape: tuple[int, int, int],
    batches: tuple[int, ...] = (1, 4),
    rtol: float = PARITY_RTOL,
    seed: int = 0,
) -> ParityResult:
    """Run PyTorch and ONNX Runtime (CPU) on the same seeded inputs at each batch size."""
    import torch
    session = cpu_session(onnx_path, level="ORT_ENABLE_ALL")
    input_name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    result = ParityResult(rtol=rtol)
    for batch in batches:
        x = torch.randn(batch, *input_shape, generator=generator)
        with torch.no_grad():
            expected = first_output(module(x)).numpy()
        start = time.perf_counter()
        got = session.run(None, {input_name: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ValidationFailed(f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape} at batch {batch}")
        errors = max_errors(got, expected)
        result.batches.append({
            "batch": batch,
            **errors,
            "passed": bool(np.isfinite(got).all() and errors["max_rel_error"] <= rtol),
            "onnxruntime_ms": round((time.perf_counter() - start) * 1e3, 2),
        })
    return result


def first_output(output: Any) -> torch.Tensor:
    """The model's output tensor, or the first item of a tuple/list output; one-line error otherwise."""
    import torch
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DeployResError(f"the model returned {type(output).__name__}; deployres needs a tensor (or a tuple whose first item is one)")
