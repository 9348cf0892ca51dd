"""The pass runner: rewrite an ONNX graph for a target and prove every pass harmless on numbers.

``optimize(model, target=...)`` runs the target's passes (see
:data:`PIPELINES`) over an onnx-graphsurgeon graph. After every pass it runs
the graph after it in ONNX Runtime (CPU provider, ``ORT_DISABLE_ALL`` so
ORT's own fusions cannot hide a broken pass) on the same seeded random
inputs with a batch > 1, compares with the outputs of the graph before it
(the previous pass's check), and raises
:class:`~deploy_res.core.errors.ValidationFailed` naming the pass when an output
moves by more than ``atol + rtol * max(1, max|reference|)``. Checks run
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

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from deploy_res.core.errors import DeployResError, ValidationFailed
from deploy_res.core.numerics import PASS_CHECK_RTOL, PASS_CHECK_RTOL_FP16, max_errors, seeded_feeds, session_options
from deploy_res.core.onnx_io import PROTOBUF_LIMIT, ModelLike, first_line, load_model, proto_bytes, save_model
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

TARGETS = ("onnxruntime", "tensorrt", "portable")
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

DEFAULT_RTOL = PASS_CHECK_RTOL
"""Tolerance relative to the largest reference output magnitude: |after - before| <= atol + rtol * max(1, max|before|)."""
DEFAULT_RTOL_FP16 = PASS_CHECK_RTOL_FP16
"""The default for graphs that compute in float16 (refolded FP16 weights round differently)."""
DEFAULT_BATCH = 2
DEFAULT_SEED = 0
MS_DOMAIN = "com.microsoft"
_FLOAT16 = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)



def optimize(
    model_or_path: ModelLike,
    output_path: Optional[Union[str, os.PathLike]] = None,
    target: str = DEFAULT_TARGET,
    batch: int = DEFAULT_BATCH,
    rtol: Optional[float] = None,
    atol: float = 0.0,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    seed: int = DEFAULT_SEED,
    write_manifest: bool = True,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Optimise an ONNX model for ``target`` and check every pass; return ``(model, report)``.

    Args:
        model_or_path: an ``onnx.ModelProto`` or the path of an ONNX file (any
            exporter's, not only deployres').
        output_path: where to write the optimised model (atomically; external
            data only past 2 GB), with a manifest ``<output>.json`` holding the
            report unless ``write_manifest`` is False. None: write nothing.
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
    source = None if isinstance(model_or_path, onnx.ModelProto) else Path(model_or_path)
    original = load_model(model_or_path)
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
        _check(after)
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
        "onnx_checker": "skipped (over 2 GB; checked on the saved file when output_path is given)" if large else "passed",
        "seconds": round(time.perf_counter() - started, 3),
    }
    if target == "tensorrt":
        report["residual_adds"] = find_residual_adds(graph)
    if output_path is not None:
        from deploy_res.core.files import write_artifact

        # The model and its manifest are placed as one unit (an old pair is replaced whole, or kept).
        with write_artifact(output_path, manifest=write_manifest) as pending:
            save_model(after, pending.path)
            if large:
                _check(str(pending.path))
                report["onnx_checker"] = "passed"
            if write_manifest:
                pending.set_manifest("optimize", _manifest_body(source, report))
    return after, report


# ---------------------------------------------------------------- model I/O


def _manifest_body(source: Optional[Path], report: dict[str, Any]) -> dict[str, Any]:
    """The optimise stage's manifest: the source's lineage, the source file, the settings, the report."""
    from deploy_res.core.files import file_record
    from deploy_res.core.manifest import lineage, read_manifest

    return {
        **lineage(read_manifest(source) if source is not None else None),
        "inputs": {"onnx": file_record(source) if source is not None else None},
        "settings": {key: report[key] for key in ("target", "batch", "seed", "rtol", "atol", "input_shapes")},
        "check": {"passes": report},
    }


def graph_to_model(graph: gs.Graph, original: onnx.ModelProto) -> onnx.ModelProto:
    """The graph as a model with the original's IR version, opsets (+ com.microsoft 1 when used) and metadata."""
    model = gs.export_onnx(graph)
    model.ir_version = original.ir_version
    domains = {opset.domain: opset.version for opset in model.opset_import}
    for opset in original.opset_import:
        domains.setdefault(opset.domain, opset.version)
    if any(node.domain == MS_DOMAIN for node in model.graph.node):
        domains.setdefault(MS_DOMAIN, 1)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in sorted(domains.items()))
    model.producer_name = original.producer_name
    model.producer_version = original.producer_version
    model.doc_string = original.doc_string
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    return model


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes and types for every tensor where ONNX can infer them (the passes use ranks and shapes).

    Give it a weightless model (:func:`_split_weights`): inference reads only
    the weights' shapes, and serialising the weights would cost more than it.
    """
    if proto_bytes(model) >= PROTOBUF_LIMIT:
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a help, not a requirement
        return model


def _import_graph(light: onnx.ModelProto, original: onnx.ModelProto) -> gs.Graph:
    """The graph of a weightless model, its stub initializers pointing at ``original``'s weights again (no copy)."""
    graph = gs.import_onnx(light)
    weights = {tensor.name: tensor for tensor in original.graph.initializer}
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if isinstance(values, LazyValues) and values.tensor.data_location == onnx.TensorProto.EXTERNAL and tensor.name in weights:
            tensor._values = LazyValues(weights[tensor.name])  # noqa: SLF001 - gs exports LazyValues without a copy
            tensor.data_location = weights[tensor.name].data_location if weights[tensor.name].HasField("data_location") else None
    return graph


class _GraphRunner:
    """Runs a graph-surgeon graph in ONNX Runtime without exporting its weights.

    Large constants are exported as external-data stubs and handed to ORT as
    in-memory initializers: weights still in the source file's protobuf are
    read in place (one array per tensor, kept for the whole run), weights a
    pass computed are passed as they are.

    :meth:`check` skips the run when the graph is identical to the one it ran
    last: the same serialised structure and small constants, the same weight
    arrays, and each of them bit-for-bit what it was at that run (compared
    with a copy, so a weight edited in place is caught). Identical graphs
    give identical outputs.
    """

    def __init__(self, original: onnx.ModelProto, feeds: Mapping[str, np.ndarray], threshold: int = 1024, known: Optional[Mapping[str, np.ndarray]] = None) -> None:
        self.original, self.feeds, self.threshold = original, feeds, threshold
        self._arrays: dict[int, tuple[Any, np.ndarray]] = {}
        self._known = dict(known or {})  # arrays already read from the original's initializers, by name
        self._last: Optional[tuple] = None
        self._snapshots: dict[int, np.ndarray] = {}

    def _array(self, values: Any) -> Optional[np.ndarray]:
        if isinstance(values, np.ndarray):
            return values if values.flags.c_contiguous else None
        if not isinstance(values, LazyValues) or isinstance(values, SparseValues):
            return None
        cached = self._arrays.get(id(values))
        if cached is None:
            tensor = values.tensor
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                return None
            known = self._known.get(tensor.name)
            array = known if known is not None and known.shape == tuple(tensor.dims) else _tensor_array(tensor)
            cached = self._arrays[id(values)] = (values, array)
        return cached[1]

    def model(self, graph: gs.Graph) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        """The graph as a weightless model and its large weights by name."""
        swapped, arrays = [], {}
        try:
            for tensor in graph.tensors().values():
                if not isinstance(tensor, gs.Constant) or tensor._export_dtype is not None:  # noqa: SLF001
                    continue
                values = tensor._values  # noqa: SLF001
                array = self._array(values)
                if array is None or array.nbytes <= self.threshold or tensor.name in arrays:
                    continue
                try:
                    data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
                except (KeyError, TypeError, ValueError):
                    continue
                if data_type in (onnx.TensorProto.BFLOAT16, onnx.TensorProto.STRING):
                    continue
                stub = onnx.TensorProto(name=tensor.name, data_type=data_type, dims=array.shape, data_location=onnx.TensorProto.EXTERNAL)
                for key, value in (("location", "deployres-in-memory"), ("offset", "0"), ("length", str(array.nbytes))):
                    stub.external_data.add(key=key, value=value)
                swapped.append((tensor, values))
                tensor._values = LazyValues(stub)  # noqa: SLF001
                arrays[tensor.name] = array
            light = graph_to_model(graph, self.original)
        finally:
            for tensor, values in swapped:
                tensor._values = values  # noqa: SLF001
        return light, arrays

    def check(self, graph: gs.Graph, previous: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
        """The graph's outputs on the feeds, and whether they are ``previous`` because the graph did not change."""
        light, arrays = self.model(graph)
        data = light.SerializeToString()
        key = (data, tuple((name, id(array)) for name, array in arrays.items()))
        if key == self._last and all(_same_bytes(array, self._snapshots[id(array)]) for array in arrays.values() if id(array) in self._snapshots):
            return dict(previous), True
        outputs = _run_light(light, arrays, self.feeds, serialized=data)
        self._last = key
        # Arrays that could be edited in place (not views of immutable bytes) are remembered as they were run.
        self._snapshots = {id(array): array.copy() for array in arrays.values() if not _views_bytes(array)}
        return outputs, False


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equal (NaN payloads and -0.0 included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    word = next(w for w in (np.uint64, np.uint32, np.uint16, np.uint8) if a.nbytes % np.dtype(w).itemsize == 0)
    return bool(np.array_equal(a.reshape(-1).view(word), b.reshape(-1).view(word)))


def _views_bytes(array: np.ndarray) -> bool:
    """True when ``array`` is a view of an immutable ``bytes`` object (a weight read in place from the protobuf)."""
    base = array.base
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, bytes)


def _check(model: Union[onnx.ModelProto, str]) -> None:
    """``onnx.checker.check_model``; a failure is a bug in a pass (ValidationFailed).

    An in-memory model is checked without its weights' bytes (they are
    declared as typed graph inputs instead): the checker does not look at
    weight values, and serialising them cost more than the check itself.
    """
    if isinstance(model, onnx.ModelProto):
        model = _without_weights(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ValidationFailed(f"the optimised graph fails the ONNX checker: {first_line(exc)}") from None


def _without_weights(model: onnx.ModelProto, threshold: int = 1024) -> onnx.ModelProto:
    """``model`` with its large initializers turned into graph inputs of the same type and shape (their bytes untouched)."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    source, graph = model.graph, light.graph
    graph.name = source.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(source, field))
    for tensor in source.initializer:
        if _raw_nbytes(tensor) <= threshold or tensor.data_location == onnx.TensorProto.EXTERNAL:
            graph.initializer.append(tensor)
        else:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _computes_in_fp16(model: onnx.ModelProto) -> bool:
    """True when graph inputs/outputs or initializers are float16/bfloat16."""
    values = list(model.graph.input) + list(model.graph.output)
    if any(v.type.tensor_type.elem_type in _FLOAT16 for v in values):
        return True
    return any(t.data_type in _FLOAT16 and len(t.dims) > 1 for t in model.graph.initializer)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first; non-default domains as ``domain.Op``."""
    counts = Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}" for node in model.graph.node)
    return dict(counts.most_common())


# ---------------------------------------------------------------- numerical checks


def make_inputs(
    model: onnx.ModelProto,
    batch: int = DEFAULT_BATCH,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, np.ndarray]:
    """Seeded random feeds for every graph input: standard normal floats, small integers, random booleans.

    Shapes come from the graph; a dynamic first axis becomes ``batch``; any
    other dynamic axis needs ``input_shapes`` (one-line DeployResError).
    """
    initializers = {tensor.name for tensor in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?") for dim in tensor_type.shape.dim]
        specs.append((value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)))
    return seeded_feeds(specs, batch, seed=seed, shapes=input_shapes)


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], level: Optional[Any] = None) -> dict[str, np.ndarray]:
    """Run ``model`` on ONNX Runtime's CPU provider (default ``ORT_DISABLE_ALL``); outputs by name.

    Large weights are handed to ORT as in-memory external initializers, so a
    model is never serialised whole (faster, and fine past protobuf's 2 GB).
    """
    return _run_light(*_split_weights(model), feeds, level=level)


def _run_light(
    light: onnx.ModelProto, arrays: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray], level: Optional[Any] = None, serialized: Optional[bytes] = None
) -> dict[str, np.ndarray]:
    """Run a weightless model whose large weights are ``arrays`` (see :func:`_split_weights`)."""
    import onnxruntime as ort

    # A check runs once: pool threads spinning after it only take the CPU from the next pass.
    options = session_options(spinning=False, external=arrays)
    if level is not None:
        options.graph_optimization_level = level
    session = ort.InferenceSession(serialized if serialized is not None else light.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def _split_weights(model: onnx.ModelProto, threshold: int = 1024) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A copy of ``model`` whose initializers above ``threshold`` bytes are external stubs, and their values."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    source, graph = model.graph, light.graph
    graph.name = source.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(source, field))
    arrays: dict[str, np.ndarray] = {}
    for tensor in source.initializer:
        size = _raw_nbytes(tensor)
        if size <= threshold or not tensor.HasField("raw_data") or tensor.data_type in (onnx.TensorProto.BFLOAT16, onnx.TensorProto.STRING):
            graph.initializer.append(tensor)
            continue
        array = arrays[tensor.name] = _tensor_array(tensor)
        stub = graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims, data_location=onnx.TensorProto.EXTERNAL)
        for key, value in (("location", "deployres-in-memory"), ("offset", "0"), ("length", str(array.nbytes))):
            stub.external_data.add(key=key, value=value)
    return light, arrays


def _raw_nbytes(tensor: onnx.TensorProto) -> int:
    """The size of a tensor's values from its dims and type (reading ``raw_data`` would copy the bytes)."""
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return tensor.ByteSize()
    return itemsize * int(np.prod(tensor.dims, dtype=np.int64))


def _tensor_array(tensor: onnx.TensorProto) -> np.ndarray:
    """A tensor's values; read-only and without a second copy when they are raw little-endian bytes."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is not None and dtype.kind in "fiub" and tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) == dtype.itemsize * int(np.prod(tensor.dims, dtype=np.int64)):
            return np.frombuffer(raw, dtype=dtype).reshape(tuple(tensor.dims))
    return onnx.numpy_helper.to_array(tensor)


def compare_outputs(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> dict[str, Any]:
    """Worst output difference: ``{"ok", "output", "max_abs_error", "max_rel_error", "ref_max", "tolerance"}``.

    An output passes when ``max|a - r| <= atol + rtol * max(1, max|r|)``;
    ``max_rel_error`` is :func:`deploy_res.core.numerics.max_errors`' (of
    ``max|r|``); ``ref_max`` is ``max(1, max|r|)``, the tolerance's scale.
    Non-float outputs must match exactly; NaNs must sit where the reference has them.
    """
    worst = {"ok": True, "output": None, "max_abs_error": 0.0, "max_rel_error": 0.0, "ref_max": 1.0, "tolerance": atol + rtol}
    largest_abs = 0.0
    for name, ref in reference.items():
        failed = {"ok": False, "output": name, "max_abs_error": float("inf"), "max_rel_error": float("inf"), "ref_max": 1.0, "tolerance": atol + rtol}
        if name not in actual:
            return failed
        ref, out = np.asarray(ref), np.asarray(actual[name])
        if ref.shape != out.shape:
            return {**failed, "output": f"{name} (shape {list(out.shape)}, expected {list(ref.shape)})"}
        if not np.issubdtype(ref.dtype, np.floating):
            if not np.array_equal(ref, out):
                return failed
            continue
        r64, a64 = ref.astype(np.float64), out.astype(np.float64)
        nan_ref = np.isnan(r64)
        if not np.array_equal(nan_ref, np.isnan(a64)):
            return failed
        errors = max_errors(a64, r64)
        diff, scale = errors["max_abs_error"], max(1.0, errors["max_abs_reference"])
        entry = {"ok": diff <= atol + rtol * scale, "output": name, "max_abs_error": diff, "max_rel_error": errors["max_rel_error"],
                 "ref_max": scale, "tolerance": atol + rtol * scale}
        if not entry["ok"]:
            return entry
        largest_abs = max(largest_abs, diff)
        if worst["output"] is None or entry["max_rel_error"] > worst["max_rel_error"]:
            worst = entry
    return {**worst, "max_abs_error": largest_abs}


# ---------------------------------------------------------------- report rendering


def render_report(report: Mapping[str, Any], max_reasons: int = 6) -> Any:
    """The report as a short rich renderable: op counts before/after, one row per pass, the first skip reasons.

    Print it with ``rich.console.Console().print(render_report(report))``.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    ops = Table(title=f"ops ({report['nodes_before']} -> {report['nodes_after']} nodes)", show_edge=False)
    ops.add_column("op")
    ops.add_column("before", justify="right")
    ops.add_column("after", justify="right")
    before, after = report["ops_before"], report["ops_after"]
    for op in list(before) + [op for op in after if op not in before]:
        b, a = before.get(op, 0), after.get(op, 0)
        ops.add_row(op, str(b), str(a), style=None if a == b else "bold")

    passes = Table(title=f"passes (target {report['target']}, batch {report['batch']}, rtol {report['rtol']:g})", show_edge=False)
    for column, justify in (("#", "right"), ("pass", "left"), ("changed", "right"), ("skipped", "right"), ("max abs err", "right"), ("max rel err", "right"), ("time s", "right")):
        passes.add_column(column, justify=justify)
    reasons = []
    for entry in report["passes"]:
        passes.add_row(
            str(entry["step"]),
            entry["name"],
            str(entry["changed"]),
            str(len(entry["skipped"])),
            f"{entry['max_abs_error']:.2e}",
            f"{entry['max_rel_error']:.2e}",
            f"{entry['seconds']:.2f}",
        )
        reasons += [f"{entry['name']}: {reason}" for reason in entry["skipped"]]
    parts: list[Any] = [ops, passes]
    if reasons:
        lines = [f"skipped: {reason}" for reason in reasons[:max_reasons]]
        if len(reasons) > max_reasons:
            lines.append(f"... and {len(reasons) - max_reasons} more (see the manifest)")
        parts.append(Text("\n".join(lines), style="dim"))
    if "residual_adds" in report:
        parts.append(Text(f"{len(report['residual_adds'])} residual Adds listed in the manifest (the finder the INT8 stage quantises by)"))
    if report.get("checks_by_identity"):
        steps = ", ".join(str(step) for step in report["checks_by_identity"])
        parts.append(Text(f"steps {steps} left the graph identical (structure and weights, bit for bit): checked by identity, not run again", style="dim"))
    parts.append(Text(f"end to end: max abs error {report['max_abs_error']:.2e}, max rel error {report['max_rel_error']:.2e}, {report['seconds']:.1f} s"))
    return Group(*parts)
