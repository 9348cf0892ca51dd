"""Cleanup steps on shapes: infer them again, and fold the shape arithmetic exporters write.

Like the node merges beside them (:mod:`deploy_res.exporters.passes.merges`),
each step rewrites the graph in place, returns how many places it changed,
and leaves alone (with a reason where the user could care) every case it
does not handle; :func:`deploy_res.exporters.passes.cleanup.cleanup` runs
them, and the pass runner checks the result numerically like every pass.

- :func:`infer_shapes` re-runs ONNX shape inference (with data propagation)
  on a weightless copy of the graph, so shapes that became known after
  folding (a Pad whose amounts were computed at run time) reach ``Shape``;
- :func:`fold_shape_slices` folds ``Shape -> Slice`` of static dimensions
  (``Shape`` and ``Shape -> Gather`` are folded by the cleanup);
- :func:`reshape_copy_dims` makes a Reshape whose target shape copies a
  dynamic dimension of its own input (``Concat(Shape(x)[0], 512)``, a
  flatten with a dynamic batch) read a constant with ``0`` there ("copy this
  dimension", ``allowzero=0``), so the shape arithmetic goes.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from deploy_res.exporters.passes._common import LIGHT_BYTES, PassResult, constant_nbytes, is_standard, label, producer, replace_uses


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
    for tensor in [t for t in copy.tensors().values() if isinstance(t, gs.Constant) and constant_nbytes(t) > LIGHT_BYTES]:
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
