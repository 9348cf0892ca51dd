"""The pass runner's numeric harness: seeded inputs, ONNX Runtime runs that never serialise the weights,
the output comparison, and the ONNX checker.

:func:`make_inputs` gives seeded random feeds for a model's inputs; :func:`run_ort`
runs a model on ONNX Runtime's CPU provider (``ORT_DISABLE_ALL`` unless told), with
large weights handed over as in-memory initializers; ``_GraphRunner`` runs a
graph-surgeon graph the same way after each pass (and knows when it did not change);
:func:`compare_outputs` says whether outputs moved by more than
``atol + rtol * max(1, max|reference|)`` (:mod:`deploy_res.core.numerics`' error vocabulary).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from deploy_res.core.errors import ValidationFailed
from deploy_res.core.numerics import PASS_CHECK_RTOL, PASS_CHECK_RTOL_FP16, max_errors, cpu_session, seeded_feeds
from deploy_res.core.onnx_io import first_line
from deploy_res.exporters.graph_io import graph_to_model

DEFAULT_RTOL = PASS_CHECK_RTOL
"""Tolerance relative to the largest reference output magnitude: |after - before| <= atol + rtol * max(1, max|before|)."""
DEFAULT_RTOL_FP16 = PASS_CHECK_RTOL_FP16
"""The default for graphs that compute in float16 (refolded FP16 weights round differently)."""
DEFAULT_BATCH = 2
DEFAULT_SEED = 0
_FLOAT16 = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


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


def onnx_check(model: Union[onnx.ModelProto, str]) -> None:
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


def _shell(model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.GraphProto, onnx.GraphProto]:
    """A copy of ``model`` without its initializers: ``(copy, model's graph, copy's graph)``; callers add the weights."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    source, graph = model.graph, light.graph
    graph.name = source.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(source, field))
    return light, source, graph


def _without_weights(model: onnx.ModelProto, threshold: int = 1024) -> onnx.ModelProto:
    """``model`` with its large initializers turned into graph inputs of the same type and shape (their bytes untouched)."""
    light, source, graph = _shell(model)
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


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` on ONNX Runtime's CPU provider at ``ORT_DISABLE_ALL``; outputs by name.

    Large weights are handed to ORT as in-memory external initializers, so a
    model is never serialised whole (faster, and fine past protobuf's 2 GB).
    """
    return _run_light(*_split_weights(model), feeds)


def _run_light(
    light: onnx.ModelProto, arrays: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray], serialized: Optional[bytes] = None
) -> dict[str, np.ndarray]:
    """Run a weightless model whose large weights are ``arrays`` (see :func:`_split_weights`) at ``ORT_DISABLE_ALL``."""
    # A check runs once: pool threads spinning after it only take the CPU from the next pass.
    session = cpu_session(serialized if serialized is not None else light, spinning=False, external=arrays)
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def _split_weights(model: onnx.ModelProto, threshold: int = 1024) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A copy of ``model`` whose initializers above ``threshold`` bytes are external stubs, and their values."""
    light, source, graph = _shell(model)
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
