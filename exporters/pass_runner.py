"""The pass runner: rewrite an ONNX graph for a target and prove every pass harmless on numbers.

``optimize(model, target=...)`` runs the target's passes (see
:data:`PIPELINES`) over an onnx-graphsurgeon graph. After every pass it runs
the graph after it in ONNX Runtime (CPU provider, ``ORT_DISABLE_ALL`` so
ORT's own fusions cannot hide a broken pass) on the same seeded random
inputs with a batch > 1, compares with the outputs of the graph before it
(the previous pass's check), and raises
:class:`~deploy_res.core.errors.ValidationFailed` naming the pass when an output
moves by more than ``atol + rtol * max(1, max|reference|)`` (the checks live in
:mod:`deploy_res.exporters.checks`, the report table in :mod:`deploy_res.exporters.report`). Checks run
weightless exports whose weights ORT reads in place; a pass that leaves the
graph identical, weights bit for bit, is verified by that identity
(``report["checks_by_identity"]``).

Targets:

- ``onnxruntime``: cleanup, fold BatchNorm, fold residual scales, fold Pads
  and per-channel affine ops into Convs, fuse Conv+Add(+Relu) into
  ``com.microsoft.FusedConv``, cleanup;
- ``tensorrt``: the same with standard ops only: residual Adds are made
  contiguous with their Conv and Relu and listed in the report;
- ``portable``: cleanup, fold BatchNorm, fold into Conv, cleanup.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional, Sequence

import onnx
import onnx_graphsurgeon as gs

from deploy_res.core.errors import DeployResError, ValidationFailed
from deploy_res.core.onnx_io import PROTOBUF_LIMIT, ModelLike, first_line, load_onnx, proto_bytes
from deploy_res.exporters.checks import (
    DEFAULT_BATCH,
    DEFAULT_RTOL,
    DEFAULT_RTOL_FP16,
    DEFAULT_SEED,
    _GraphRunner,
    onnx_check,
    _computes_in_fp16,
    _run_light,
    _split_weights,
    compare_outputs,
    make_inputs,
)
from deploy_res.exporters.graph_io import _import_graph, _infer_shapes, graph_to_model
from deploy_res.exporters.passes import (
    PassResult,
    cleanup,
    find_residual_adds,
    fold_batchnorm,
    fold_into_conv,
    fold_residual_scale,
    fuse_residual_ort,
    prepare_residual_tensorrt,
)

from deploy_res.exporters.report import op_counts

TARGETS = ("onnxruntime", "tensorrt", "portable")
CHECKED_WHEN_SAVED = "skipped in memory (over 2 GB): check the saved file"
"""``report["onnx_checker"]`` of a model past protobuf's limit: the checker can only read it from a file."""
DEFAULT_TARGET = "onnxruntime"

PASSES: dict[str, Callable[[gs.Graph], PassResult]] = {
    "cleanup": cleanup,
    "fold_batchnorm": fold_batchnorm,
    "fold_into_conv": fold_into_conv,
    "fold_residual_scale": fold_residual_scale,
    "fuse_residual_ort": fuse_residual_ort,
    "prepare_residual_tensorrt": prepare_residual_tensorrt,
}
"""Pass name -> function. Looked up at every run, so a test can swap one in."""

PIPELINES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("cleanup", "fold_batchnorm", "fold_residual_scale", "fold_into_conv", "fuse_residual_ort", "cleanup"),
    "tensorrt": ("cleanup", "fold_batchnorm", "fold_residual_scale", "fold_into_conv", "prepare_residual_tensorrt", "cleanup"),
    "portable": ("cleanup", "fold_batchnorm", "fold_into_conv", "cleanup"),
}



def optimize(
    model_or_path: ModelLike,
    target: str = DEFAULT_TARGET,
    batch: int = DEFAULT_BATCH,
    rtol: Optional[float] = None,
    atol: float = 0.0,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    seed: int = DEFAULT_SEED,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Optimise an ONNX model for ``target`` and check every pass; return ``(model, report)``. Nothing is written:
    the optimise stage (:func:`deploy_res.optimize.optimize_file`) saves the model with its manifest.

    Args:
        model_or_path: an ``onnx.ModelProto`` or the path of an ONNX file (any
            exporter's, not only deployres').
        target: ``onnxruntime`` (default), ``tensorrt`` or ``portable``.
        batch: batch size of the check inputs when the batch axis is dynamic (default 2).
        rtol: tolerance relative to the largest reference output magnitude;
            default 1e-4, or 5e-3 for graphs that compute in float16.
        atol: absolute tolerance added to it (default 0).
        input_shapes: full shapes for inputs whose non-batch axes are dynamic.
        seed: seed of the random check inputs (default 0).

    Raises:
        DeployResError: the file is missing or unreadable, the target is
            unknown, ONNX Runtime cannot run the input graph, or an input
            shape is dynamic beyond the batch axis and not given.
        ValidationFailed: a pass changed the outputs beyond tolerance (the
            message names it) or produced a graph ONNX Runtime or the ONNX
            checker rejects.
    """
    if target not in PIPELINES:
        raise DeployResError(f"unknown target {target!r}; choose one of {', '.join(PIPELINES)}")
    if batch < 1:
        raise DeployResError(f"batch must be at least 1, got {batch}")
    started = time.perf_counter()
    original = load_onnx(model_or_path)
    # Everything but the final check and save works on a weightless copy: ORT reads the weights in place.
    light, arrays = _split_weights(original)
    tolerance = rtol if rtol is not None else (DEFAULT_RTOL_FP16 if _computes_in_fp16(original) else DEFAULT_RTOL)
    feeds = make_inputs(original, batch=batch, input_shapes=input_shapes, seed=seed)
    try:
        reference = _run_light(light, arrays, feeds)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise DeployResError(f"ONNX Runtime cannot run the input model ({first_line(exc)}); check the file and its input shapes") from None

    graph = _import_graph(_infer_shapes(light), original)
    checker = _GraphRunner(original, feeds, known=arrays)
    output_names = [tensor.name for tensor in graph.outputs]
    previous = reference
    passes = []
    steps = PIPELINES[target]
    after = None
    by_identity: list[int] = []
    for step, name in enumerate(steps, start=1):
        function = PASSES[name]
        t0 = time.perf_counter()
        result = function(graph)
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        if [tensor.name for tensor in graph.outputs] != output_names:
            raise ValidationFailed(f"pass '{name}' (step {step}) changed the graph outputs {output_names} to {[t.name for t in graph.outputs]}; this is a bug in the pass")
        if step == len(steps):
            after = graph_to_model(graph, original)
        try:
            outputs, identical = checker.check(graph, previous)
        except Exception as exc:  # noqa: BLE001
            raise ValidationFailed(f"pass '{name}' (step {step}) produced a graph ONNX Runtime cannot run: {first_line(exc)}") from None
        check = compare_outputs(previous, outputs, rtol=tolerance, atol=atol)
        if not check["ok"]:
            raise ValidationFailed(
                f"pass '{name}' (step {step}) changed output '{check['output']}': max abs error {check['max_abs_error']:.3g} "
                f"> tolerance {check['tolerance']:.3g} (rtol {tolerance:g} x max(1, max|ref| {check['ref_max']:.3g}) + atol {atol:g}); "
                f"re-run without optimisation and report the bug"
            )
        passes.append(
            {
                "name": name,
                "step": step,
                "changed": int(result.changed),
                "skipped": list(result.skipped),
                "details": {key: value for key, value in result.details.items() if key != "residual_adds"},
                "max_abs_error": check["max_abs_error"],
                "max_rel_error": check["max_rel_error"],
                "seconds": round(seconds, 4),
                "check_seconds": round(time.perf_counter() - t1, 4),
            }
        )
        previous = outputs
        if identical:
            by_identity.append(step)

    if after is None:  # an empty pipeline
        after = graph_to_model(graph, original)
    large = proto_bytes(after) >= PROTOBUF_LIMIT
    if not large:
        onnx_check(after)
    total = compare_outputs(reference, previous, rtol=tolerance, atol=atol)
    report: dict[str, Any] = {
        "target": target,
        "passes_run": list(PIPELINES[target]),
        "batch": batch,
        "input_shapes": {name: list(value.shape) for name, value in feeds.items()},
        "seed": seed,
        "rtol": tolerance,
        "atol": atol,
        "ops_before": op_counts(original),
        "ops_after": op_counts(after),
        "nodes_before": len(original.graph.node),
        "nodes_after": len(after.graph.node),
        "passes": passes,
        "checks_by_identity": by_identity,
        "max_abs_error": total["max_abs_error"],
        "max_rel_error": total["max_rel_error"],
        "onnx_checker": CHECKED_WHEN_SAVED if large else "passed",
        "seconds": round(time.perf_counter() - started, 3),
    }
    if target == "tensorrt":
        report["residual_adds"] = find_residual_adds(graph)
    return after, report

