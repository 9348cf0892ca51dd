"""What a build is told: :class:`BuildSettings`, checked whole before any work starts.

The command line builds one from its options (one option per field, the same
name with dashes); ``deployres run`` builds one per precision; the Python API
takes one. Choices and defaults live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from deploy_res.core.errors import DeployResError, require_at_least_one
from deploy_res.engines import BACKENDS, PRECISIONS
from deploy_res.engines.precision.calibration import DEFAULT_METHOD, METHODS

if TYPE_CHECKING:  # the zoo imports torch; the command line reads these settings without it
    from deploy_res.models import Preprocessing

DEVICES = ("cpu", "cuda")
PERF_HINTS = ("latency", "throughput")
OVERFLOW_FIX_CHOICES = ("auto", "first_layer", "none")
DEFAULT_CALIB_SAMPLES = 128


@dataclass(frozen=True)
class BuildSettings:
    """One engine build. Every field has the default the command line has.

    Precision and backend:
        precision: ``fp32`` (default), ``fp16``, ``bf16`` (an OpenVINO engine; CPUs with AVX512_BF16 or AMX) or ``int8``.
        backend: ``auto`` (default: TensorRT with a GPU and TensorRT; on a CPU, ONNX Runtime or OpenVINO,
            whichever is measured faster at build), ``onnxruntime``, ``openvino`` or ``tensorrt``.
        device: ONNX Runtime's device, ``cpu`` (default) or ``cuda``.
        onnx_only: write the FP16 / Q/DQ ONNX the build would use and stop (default False).

    INT8:
        calib_data: a folder of images, or .npy/.npz arrays, of real inputs (required for INT8).
        calib_samples: calibration samples to use (default 128; fewer available is an error).
        calib_method: ``percentile`` (default), ``minmax`` or ``entropy``.
        skip_bad_files: skip calibration files that fail to decode (default False: stop).
        fallback_layers: leave this many of the most sensitive layers in FP32 (default none).
        target_agreement: leave sensitive layers in FP32 until top-1 agreement with FP32 reaches this (default none).
        overflow_fix: ``auto`` (default: ``first_layer`` on an x86 CPU without VNNI, whose u8 x s8 sums saturate,
            else ``none``), ``first_layer`` (7-bit weights in the image-fed layers) or ``none``; CPU engines only.

    FP16:
        fp16_keep_op_types: ONNX op types kept in FP32 (default None: the converter's list).
        fp16_keep_nodes: node names kept in FP32 (default none).

    An ONNX file without a manifest:
        preprocessing: how calibration images become inputs (default None: the manifest's).
        input_shapes: ``{input name or None: full shape}`` for the graph passes' checks of an ONNX whose
            non-batch axes are dynamic (default None: the graph's own).

    Backend tuning, recorded in the engine's manifest:
        threads: OpenVINO inference threads (default None: OpenVINO's).
        perf_hint: OpenVINO's performance hint, ``latency`` (default) or ``throughput``.
        workspace_mb: TensorRT's workspace limit in MiB (default None: 1024).
        opt_level: TensorRT's builder optimisation level 0-5 (default None: 3).
        timing_cache: TensorRT's timing cache file (default None: ``<output>/tensorrt.timing.cache``).
    """

    precision: str = "fp32"
    backend: str = "auto"
    device: str = "cpu"
    onnx_only: bool = False
    calib_data: Optional[Path] = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    calib_method: str = DEFAULT_METHOD
    skip_bad_files: bool = False
    fallback_layers: Optional[int] = None
    target_agreement: Optional[float] = None
    overflow_fix: str = "auto"
    fp16_keep_op_types: Optional[tuple[str, ...]] = None
    fp16_keep_nodes: tuple[str, ...] = ()
    preprocessing: Optional[Preprocessing] = None
    input_shapes: Optional[Mapping[Optional[str], Sequence[int]]] = field(default=None, hash=False)
    threads: Optional[int] = None
    perf_hint: Optional[str] = None
    workspace_mb: Optional[int] = None
    opt_level: Optional[int] = None
    timing_cache: Optional[Path] = None

    def __post_init__(self) -> None:
        _choose("precision", self.precision, PRECISIONS)
        _choose("backend", self.backend, BACKENDS)
        _choose("device", self.device, DEVICES)
        _choose("calibration method", self.calib_method, METHODS)
        _choose("overflow fix", self.overflow_fix, OVERFLOW_FIX_CHOICES)
        if self.perf_hint is not None:
            _choose("performance hint", self.perf_hint, PERF_HINTS)
        require_at_least_one(self, "calib_samples", "threads", "workspace_mb")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise DeployResError(f"--opt-level is TensorRT's builder level 0-5, got {self.opt_level}")
        if self.fallback_layers is not None and self.fallback_layers < 0:
            raise DeployResError(f"--fallback-layers must be 0 or more, got {self.fallback_layers}")
        if self.target_agreement is not None and not (math.isfinite(self.target_agreement) and 0 <= self.target_agreement <= 1):
            raise DeployResError(f"--target-agreement is a top-1 agreement from 0 to 1, got {self.target_agreement}")
        if self.overflow_fix == "first_layer" and (self.precision != "int8" or self.backend == "tensorrt" or self.device != "cpu"):
            raise DeployResError("--overflow-fix first_layer is for INT8 engines on the CPU (a GPU's INT8 has no saturating 16-bit sums); "
                                 "drop it or use --int8 with --backend onnxruntime|openvino")
        if (self.target_agreement is not None or self.fallback_layers is not None) and self.precision != "int8":
            raise DeployResError("--target-agreement and --fallback-layers go with --int8")
        if self.target_agreement is not None and self.fallback_layers is not None:
            raise DeployResError("give --target-agreement or --fallback-layers, not both")
        if self.precision == "int8" and self.calib_data is None:
            raise DeployResError("--int8 needs --calib-data DIR|FILE.npy|FILE.npz of real inputs (`deployres sample-photos DIR` writes real photos)")
        if self.precision == "bf16":
            if self.onnx_only:
                raise DeployResError("--bf16 writes no ONNX of its own (OpenVINO casts the float graph when it compiles); drop --onnx-only")
            if self.backend in ("onnxruntime", "tensorrt") or self.device != "cpu":
                wrong = self.backend if self.device == "cpu" else "--device " + self.device
                raise DeployResError(f"--bf16 runs on OpenVINO on the CPU; use --backend openvino (or auto), not {wrong}")
        if self.fp16_keep_op_types:
            _check_op_types(self.fp16_keep_op_types)

    @property
    def int8_fallback(self) -> bool:
        """Whether INT8 leaves its most sensitive layers in FP32 (``fallback_layers`` or ``target_agreement``)."""
        return self.fallback_layers is not None or self.target_agreement is not None

    def tensorrt_options(self) -> dict:
        """The TensorRT builder's settings that were given (workspace in bytes, optimisation level)."""
        options = {}
        if self.workspace_mb:
            options["workspace_bytes"] = self.workspace_mb * (1 << 20)
        if self.opt_level is not None:
            options["optimization_level"] = self.opt_level
        return options


def _choose(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise DeployResError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _check_op_types(op_types: Sequence[str]) -> None:
    """A one-line error for a name that is no ONNX operator (``--fp16-keep-op-types`` takes ONNX op types)."""
    import difflib

    import onnx

    known = {schema.name for schema in onnx.defs.get_all_schemas_with_history()}
    for op_type in op_types:
        if op_type not in known:
            close = difflib.get_close_matches(op_type, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; give ONNX op types such as GlobalAveragePool,Sigmoid"
            raise DeployResError(f"--fp16-keep-op-types: {op_type!r} is not an ONNX op type{hint}")
