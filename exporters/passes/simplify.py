"""Cleanup steps for other exporters' files: shape arithmetic, duplicate nodes, Transpose pairs.

Each step rewrites the graph in place, returns how many places it changed,
and leaves alone (with a reason where the user could care) every case it
does not handle. :func:`deploy_res.exporters.passes.cleanup.cleanup` runs
them; the pass runner checks the result numerically like every pass.

- :func:`infer_shapes` re-runs ONNX shape inference (with data propagation)
  on a weightless copy of the graph, so shapes that became known after
  folding (a Pad whose amounts were computed at run time) reach ``Shape``;
- :func:`fold_shape_slices` folds ``Shape -> Slice`` of static dimensions
  (``Shape`` and ``Shape -> Gather`` are folded by the cleanup);
- :func:`reshape_copy_dims` makes a Reshape whose target shape copies a
  dynamic dimension of its own input (``Concat(Shape(x)[0], 512)``, a
  flatten with a dynamic batch) read a constant with ``0`` there ("copy this
  dimension", ``allowzero=0``), so the shape arithmetic goes;
- :func:`merge_duplicates` (common-subexpression elimination): nodes with
  the same op, inputs and attributes are computed once;
- :func:`merge_transposes`: ``Transpose -> Transpose`` becomes one Transpose
  with the composed permutation, or nothing when they cancel;
- :func:`merge_reshapes`: ``Reshape -> Reshape`` reads the first one's input
  when the second target is constant and copies nothing (no 0);
- :func:`merge_casts`: ``Cast(Cast(x, A), B)`` becomes ``Cast(x, B)`` when
  ``A`` holds every value of ``x``'s type exactly (float32 -> float64 ->
  float32 is then a no-op, which the cleanup removes);
- :func:`matmul_add_to_gemm`: a 2-D ``MatMul`` by a constant followed by the
  ``Add`` of a constant bias (a dense layer as converters write it) becomes
  one ``Gemm``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from deploy_res.exporters.passes._common import PassResult, detach, is_standard, label, producer, replace_uses

LIGHT_BYTES = 1024
"""Constants above this size are left out of the copy that shape inference sees (only their shape matters)."""

_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}


# ---------------------------------------------------------------- shape inference


def infer_shapes(graph: gs.Graph) -> int:
    """Infer shapes and types again (ONNX, ``data_prop=True``) and copy them onto the graph's variables.

    Runs on a copy of the graph whose large constants are declared as inputs
    (their shapes are all inference needs), so it costs milliseconds even on
    large models. Returns how many tensors gained shape information. Never
    raises: inference is a help, not a requirement.
    """
    copy = graph.copy()
    large = []
    for tensor in [t for t in copy.tensors().values() if isinstance(t, gs.Constant) and _nbytes(t) > LIGHT_BYTES]:
        stand_in = gs.Variable(tensor.name, dtype=tensor.dtype, shape=list(tensor.shape))
        replace_uses(tensor, stand_in)
        large.append(stand_in)
    copy.inputs = list(copy.inputs) + large
    for tensor in copy.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor not in copy.inputs and tensor not in copy.outputs:
            tensor.shape = None  # stale shapes would only conflict with fresh ones
    try:
        with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL):
            model = gs.export_onnx(copy, do_type_check=False)
        model.ir_version = max(model.ir_version, 8)
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001
        return 0
    found: dict[str, tuple[Any, list]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        kind = info.type.WhichOneof("value")
        if kind != "tensor_type" or not info.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in info.type.tensor_type.shape.dim]
        found[info.name] = (info.type.tensor_type.elem_type, dims)
    gained = 0
    for name, tensor in graph.tensors().items():
        if not isinstance(tensor, gs.Variable) or name not in found or tensor in graph.inputs:
            continue
        elem_type, dims = found[name]
        if _known(dims) > _known(tensor.shape):
            tensor.shape = dims
            gained += 1
        if tensor.dtype is None and elem_type:
            try:
                tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
            except (KeyError, TypeError):
                pass
    return gained


def _nbytes(tensor: gs.Constant) -> int:
    values = tensor._values  # noqa: SLF001 - LazyValues know their size without loading
    return int(getattr(values, "nbytes", 0))


def _known(shape) -> int:
    """How much a shape says: -1 when unknown, else its rank plus its number of static dimensions."""
    if shape is None:
        return -1
    return len(shape) + sum(isinstance(dim, int) and dim >= 0 for dim in shape)


# ---------------------------------------------------------------- shape arithmetic


def shape_dims(node: gs.Node) -> Optional[list]:
    """The dimensions a ``Shape`` node returns (honouring ``start``/``end``), static or symbolic; None when unknown."""
    if not node.inputs or node.inputs[0].shape is None:
        return None
    return list(node.inputs[0].shape)[int(node.attrs.get("start", 0)) : node.attrs.get("end")]


def fold_shape_slices(graph: gs.Graph) -> int:
    """Fold ``Shape -> Slice`` when the dimensions it picks are static; return how many."""
    folded = 0
    for node in list(graph.nodes):
        if not is_standard(node, "Shape") or not node.outputs:
            continue
        dims = shape_dims(node)
        if dims is None:
            continue
        for consumer in list(node.outputs[0].outputs):
            if not is_standard(consumer, "Slice") or consumer.inputs[0] is not node.outputs[0] or consumer.outputs[0] in graph.outputs:
                continue
            picked = _slice(dims, consumer)
            if picked is None or not all(isinstance(dim, int) and dim >= 0 for dim in picked):
                continue
            consumer.outputs[0].to_constant(np.array(picked, dtype=np.int64))
            consumer.outputs[0].inputs.clear()
            consumer.inputs.clear()
            folded += 1
    return folded


def _slice(dims: list, node: gs.Node) -> Optional[list]:
    """``dims[start:end:step]`` for a 1-D Slice with constant starts/ends/axes/steps; None when not that."""
    args = []
    for index in range(1, 5):
        tensor = node.inputs[index] if len(node.inputs) > index and not node.inputs[index].is_empty() else None
        if tensor is None:
            args.append(None)
            continue
        if not isinstance(tensor, gs.Constant):
            return None
        args.append([int(v) for v in np.asarray(tensor.values).reshape(-1)])
    starts, ends, axes, steps = args
    if starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
        return None
    if axes is not None and axes[0] not in (0, -1):
        return None
    step = steps[0] if steps else 1
    if step == 0:
        return None
    return dims[slice(starts[0], ends[0], step)]


def _dim_source(tensor: gs.Tensor) -> Optional[tuple[gs.Tensor, int]]:
    """``(x, axis)`` when ``tensor`` is the 1-element vector ``Shape(x)[axis]`` (Gather, Slice or Unsqueeze of a Gather)."""
    node = producer(tensor)
    if node is None:
        return None
    if is_standard(node, "Unsqueeze"):
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
            axes = np.asarray(node.inputs[1].values).reshape(-1).tolist()
        if axes is None or list(axes) not in ([0], [-1]):
            return None
        inner = producer(node.inputs[0])
        if inner is None or not is_standard(inner, "Gather") or not isinstance(inner.inputs[1], gs.Constant) or np.asarray(inner.inputs[1].values).ndim != 0:
            return None
        node = inner
    if is_standard(node, "Gather"):
        if node.attrs.get("axis", 0) != 0 or not isinstance(node.inputs[1], gs.Constant):
            return None
        indices = np.asarray(node.inputs[1].values).reshape(-1)
        if indices.size != 1:
            return None
        shape_node, position = producer(node.inputs[0]), int(indices[0])
    elif is_standard(node, "Slice"):
        shape_node = producer(node.inputs[0])
        if shape_node is None or not is_standard(shape_node, "Shape") or shape_node.inputs[0].shape is None:
            return None
        positions = _slice(list(range(len(shape_dims(shape_node) or []))), node)
        if positions is None or len(positions) != 1:
            return None
        position = positions[0]
    else:
        return None
    if shape_node is None or not is_standard(shape_node, "Shape") or shape_node.inputs[0].shape is None:
        return None
    source = shape_node.inputs[0]
    rank = len(source.shape)
    start = int(shape_node.attrs.get("start", 0))
    start = min(max(start + rank if start < 0 else start, 0), rank)  # ONNX clamps like Python slicing
    axis = position + start if position >= 0 else position + len(shape_dims(shape_node) or []) + start
    return (source, axis) if 0 <= axis < rank else None


def reshape_copy_dims(graph: gs.Graph, result: PassResult) -> int:
    """Reshape targets built from the input's own dynamic dimensions become constants with 0 ("copy")."""
    changed = 0
    declared = {dim for tensor in graph.inputs for dim in (tensor.shape or []) if isinstance(dim, str) and dim}
    for node in list(graph.nodes):
        if not is_standard(node, "Reshape") or len(node.inputs) != 2 or isinstance(node.inputs[1], gs.Constant):
            continue
        concat = producer(node.inputs[1])
        if concat is None or not is_standard(concat, "Concat"):
            continue
        data = node.inputs[0]
        if node.attrs.get("allowzero", 0):
            result.skip(f"{label(node)}: allowzero=1, so 0 cannot stand for 'copy the input dimension'; shape arithmetic kept")
            continue
        target, position, ok = [], 0, data.shape is not None
        for piece in concat.inputs if ok else []:
            if isinstance(piece, gs.Constant):
                values = np.asarray(piece.values).reshape(-1)
                if 0 in values:  # a literal 0 would keep its meaning, but keep it simple and exact
                    ok = False
                    break
                target += [int(v) for v in values]
                position += values.size
                continue
            source = _dim_source(piece)
            if source is None or position >= len(data.shape) or not _same_dim(declared, data, position, *source):
                ok = False
                break
            dim = source[0].shape[source[1]]
            target.append(dim if isinstance(dim, int) and dim > 0 else 0)  # 0: copy the input's dimension
            position += 1
        if not ok:
            result.skip(f"{label(node)}: its target shape depends on values other than its input's own dimensions at the same positions; shape arithmetic kept")
            continue
        node.inputs[1] = gs.Constant(f"{node.inputs[1].name}_copy_dims", np.array(target, dtype=np.int64))
        changed += 1
    return changed


def _same_dim(declared: set, data: gs.Tensor, position: int, source: gs.Tensor, axis: int) -> bool:
    """True when ``data.shape[position]`` is known to equal ``source.shape[axis]``.

    Either the same tensor and axis, or the same symbol where that symbol is
    declared by a graph input (``batch``): shape inference propagates those
    consistently, while the names it invents (``unk__3``) mean different
    things from one inference run to the next.
    """
    if source is data and position == axis:
        return True
    ours, theirs = data.shape[position], source.shape[axis]
    return isinstance(ours, str) and ours in declared and ours == theirs


# ---------------------------------------------------------------- duplicate nodes


def merge_duplicates(graph: gs.Graph, result: PassResult) -> int:
    """Compute once what several nodes compute from the same inputs with the same attributes; return how many merged.

    Walks the graph in topological order, so chains of duplicates collapse
    in one call. Left alone: random ops, nodes with subgraphs, nodes without
    outputs, and duplicates whose outputs are graph outputs.
    """
    graph.toposort()
    seen: dict[tuple, gs.Node] = {}
    merged = 0
    outputs = set(id(t) for t in graph.outputs)
    for node in list(graph.nodes):
        if not node.outputs or node.op in _NONDETERMINISTIC:
            continue
        key = _node_key(node)
        if key is None:
            continue
        first = seen.setdefault(key, node)
        if first is node:
            continue
        if any(id(t) in outputs for t in node.outputs):
            result.skip(f"{label(node)}: duplicates {label(first)} but writes a graph output; kept")
            continue
        for mine, theirs in zip(node.outputs, first.outputs):
            replace_uses(mine, theirs)
        detach(node)
        merged += 1
    return merged


def _node_key(node: gs.Node) -> Optional[tuple]:
    attrs = []
    for name in sorted(node.attrs):
        value = _attr_key(node.attrs[name])
        if value is None:
            return None
        attrs.append((name, value))
    inputs = tuple(_input_key(tensor) for tensor in node.inputs)
    return (node.domain or "", node.op, inputs, tuple(attrs), len(node.outputs))


def _input_key(tensor: gs.Tensor) -> Any:
    """Variables by identity; small constants by value (equal shape vectors from different folds are the same input)."""
    if tensor.is_empty():
        return ""
    if isinstance(tensor, gs.Constant) and _nbytes(tensor) <= LIGHT_BYTES and isinstance(tensor.values, np.ndarray):
        return _attr_key(tensor.values)
    return id(tensor)


def _attr_key(value: Any) -> Any:
    """A hashable stand-in for an attribute value; None for what cannot be compared (subgraphs, unknown types)."""
    if isinstance(value, (bool, int, float, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, gs.Constant):
        value = value.values
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    if isinstance(value, (list, tuple)):
        items = tuple(_attr_key(item) for item in value)
        return None if any(item is None for item in items) else ("list", items)
    if isinstance(value, type) or isinstance(value, np.dtype):
        return ("type", str(value))
    return None


# ---------------------------------------------------------------- Transposes


def _perm(node: gs.Node) -> Optional[list[int]]:
    """A Transpose's permutation (the default reverses the axes: needs the rank)."""
    perm = node.attrs.get("perm")
    if perm is not None:
        return [int(axis) for axis in perm]
    shape = node.inputs[0].shape if node.inputs else None
    return None if shape is None else list(range(len(shape)))[::-1]


def merge_transposes(graph: gs.Graph, result: PassResult) -> int:
    """``Transpose(Transpose(x, p1), p2)``: one Transpose with ``p1[p2[i]]``, none when that is the identity."""
    graph.toposort()
    changed = 0
    for node in list(graph.nodes):
        if not is_standard(node, "Transpose") or not node.inputs or not node.outputs:
            continue
        inner = producer(node.inputs[0])
        if inner is None or not is_standard(inner, "Transpose") or not inner.inputs:
            continue
        p1, p2 = _perm(inner), _perm(node)
        if p1 is None or p2 is None or len(p1) != len(p2):
            result.skip(f"{label(node)}: permutation unknown (no perm and no rank); not merged with {label(inner)}")
            continue
        composed = [p1[axis] for axis in p2]
        x, y = inner.inputs[0], node.outputs[0]
        if composed != list(range(len(composed))):
            node.inputs[0] = x
            node.attrs["perm"] = composed
            changed += 1
            continue
        if y not in graph.outputs:
            replace_uses(y, x)
            detach(node)
            changed += 1
            continue
        # They cancel but the second writes a graph output: it becomes an Identity (keeps the output's name),
        # which the cleanup then removes where x's producer can write the output itself.
        node.op, node.attrs, node.inputs[0] = "Identity", {}, x
        changed += 1
    return changed


def is_identity_transpose(node: gs.Node) -> bool:
    """A Transpose whose permutation keeps every axis in place (a no-op)."""
    perm = _perm(node) if is_standard(node, "Transpose") and node.inputs else None
    return perm is not None and perm == list(range(len(perm)))


# ---------------------------------------------------------------- Reshape and Cast chains


def merge_reshapes(graph: gs.Graph, result: PassResult) -> int:
    """``Reshape(Reshape(x, s1), s2)`` reads ``x`` directly when ``s2`` is a constant without 0 entries; return how many."""
    changed = 0
    for node in list(graph.nodes):
        if not is_standard(node, "Reshape") or len(node.inputs) != 2 or not isinstance(node.inputs[1], gs.Constant):
            continue
        inner = producer(node.inputs[0])
        if inner is None or not is_standard(inner, "Reshape") or not inner.inputs:
            continue
        target = np.asarray(node.inputs[1].values).reshape(-1)
        if 0 in target and not node.attrs.get("allowzero", 0):
            result.skip(f"{label(node)}: its target copies a dimension (0) of {label(inner)}'s output; not merged")
            continue
        node.inputs[0] = inner.inputs[0]
        changed += 1
    return changed


_P = onnx.TensorProto
_WIDER = {
    _P.FLOAT16: {_P.FLOAT, _P.DOUBLE},
    _P.BFLOAT16: {_P.FLOAT, _P.DOUBLE},
    _P.FLOAT: {_P.DOUBLE},
    _P.BOOL: {_P.INT8, _P.INT16, _P.INT32, _P.INT64, _P.UINT8, _P.UINT16, _P.UINT32, _P.UINT64, _P.FLOAT16, _P.FLOAT, _P.DOUBLE},
    _P.INT8: {_P.INT16, _P.INT32, _P.INT64, _P.FLOAT16, _P.FLOAT, _P.DOUBLE},
    _P.UINT8: {_P.INT16, _P.INT32, _P.INT64, _P.UINT16, _P.UINT32, _P.UINT64, _P.FLOAT16, _P.FLOAT, _P.DOUBLE},
    _P.INT16: {_P.INT32, _P.INT64, _P.FLOAT, _P.DOUBLE},
    _P.UINT16: {_P.INT32, _P.INT64, _P.UINT32, _P.UINT64, _P.FLOAT, _P.DOUBLE},
    _P.INT32: {_P.INT64, _P.DOUBLE},
    _P.UINT32: {_P.INT64, _P.UINT64, _P.DOUBLE},
}
"""Type -> the types that represent each of its values exactly (a Cast there and back changes nothing)."""


def onnx_type(dtype: Any) -> Optional[int]:
    """A tensor's dtype (NumPy or ONNX) as an ONNX type number; None when unknown."""
    try:
        return dtype if isinstance(dtype, int) else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (TypeError, KeyError, ValueError):
        return None


def merge_casts(graph: gs.Graph, result: PassResult) -> int:
    """``Cast(Cast(x, A), B)`` becomes ``Cast(x, B)`` where ``A`` is exact for ``x``'s type; return how many."""
    changed = 0
    for node in list(graph.nodes):
        if not is_standard(node, "Cast") or not node.inputs:
            continue
        inner = producer(node.inputs[0])
        if inner is None or not is_standard(inner, "Cast") or not inner.inputs:
            continue
        source = onnx_type(inner.inputs[0].dtype)
        if source is None:
            continue
        if inner.attrs.get("to") not in _WIDER.get(source, ()):
            continue  # a narrowing or lossy middle step rounds: not removable
        node.inputs[0] = inner.inputs[0]
        changed += 1
    return changed


# ---------------------------------------------------------------- dense layers


def matmul_add_to_gemm(graph: gs.Graph, result: PassResult) -> int:
    """``Add(MatMul(x, B), c)`` with ``x`` 2-D, ``B`` a constant 2-D float and ``c`` a constant of shape (N,) or (1, N): one Gemm."""
    changed = 0
    for add in [node for node in graph.nodes if is_standard(node, "Add")]:
        if len(add.inputs) != 2:
            continue
        for index in (0, 1):
            matmul = producer(add.inputs[index])
            if matmul is not None and is_standard(matmul, "MatMul") and isinstance(add.inputs[1 - index], gs.Constant):
                break
        else:
            continue
        x, b, c = matmul.inputs[0], matmul.inputs[1], add.inputs[1 - index]
        if not isinstance(b, gs.Constant) or not isinstance(c.values, np.ndarray) or not isinstance(b.values, np.ndarray):
            continue
        if x.shape is None or len(x.shape) != 2 or b.values.ndim != 2:
            continue  # Gemm is 2-D only
        n = b.values.shape[1]
        if c.values.shape not in ((n,), (1, n)) or c.values.dtype != b.values.dtype or b.values.dtype.type not in (np.float16, np.float32, np.float64):
            continue
        if len(matmul.outputs[0].outputs) != 1 or matmul.outputs[0] in graph.outputs:
            result.skip(f"{label(matmul)}: its output has other readers; not fused with {label(add)} into a Gemm")
            continue
        out = add.outputs[0]
        detach(add)
        matmul.op, matmul.attrs = "Gemm", {}
        matmul.inputs = [x, b, c]
        matmul.outputs = [out]
        changed += 1
    return changed
