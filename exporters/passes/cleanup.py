"""Cleanup: drop Identity/Dropout, fold constants, remove no-ops, dead nodes and duplicate initializers.

What exporters leave behind: the TorchScript exporter shares equal
parameters through ``Identity`` nodes; the dynamo exporter builds each Conv's
zero bias at run time from ``Shape -> Expand -> CastLike -> Expand`` chains.
Constant folding (onnx-graphsurgeon's ``fold_constants``, which evaluates
constant sub-graphs with ONNX Runtime and folds ``Shape`` of static shapes)
turns those into initializers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from deploy_res.exporters.passes import merges, shapes
from deploy_res.exporters.passes._common import PassResult, detach, is_standard, label, onnx_type, producer, replace_uses, same_shape

FOLD_SIZE_LIMIT = 64 << 20
"""Constants larger than this (bytes) are not materialised by folding (an Expand could blow a model up)."""
MAX_ROUNDS = 8
"""Fold / infer rounds at most: each round can make shapes static that the next one folds."""


def cleanup(graph: gs.Graph) -> PassResult:
    """Run every cleanup step; ``details`` counts each kind of change.

    Steps: Identity/Dropout removal, CastLike -> Cast where the target type
    is known, then until nothing changes (at most :data:`MAX_ROUNDS` rounds,
    shapes inferred again between rounds): ``Shape``/``Shape -> Gather``/
    ``Shape -> Slice`` of static dimensions folded, constant folding (ONNX
    Runtime), removal of no-ops (same-type Casts, identity Transposes,
    shape-preserving Expands/Reshapes/Squeezes), Reshape targets built from
    the input's own dynamic dimensions made constant, ``Transpose`` pairs
    merged or cancelled, Reshape pairs and widening Cast pairs merged,
    2-D MatMul + bias Add fused into Gemm, duplicate nodes computed once;
    last, duplicate
    initializers merged and dead nodes removed. Graph inputs and output
    names are never changed. See :mod:`deploy_res.exporters.passes.shapes`
    and :mod:`deploy_res.exporters.passes.merges`.
    """
    result = PassResult(details={})
    before = len(graph.nodes)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    result.details["dead_nodes_removed"] = before - len(graph.nodes)
    result.details["identity_dropout_removed"] = _remove_passthrough(graph, result)
    result.details["castlike_to_cast"] = _castlike_to_cast(graph)
    lowered = _lower_constant_nodes(graph)
    for key in ("shapes_folded", "nodes_folded", "noops_removed", "reshape_dims_copied", "transposes_merged", "reshapes_merged", "casts_merged", "dense_to_gemm", "duplicate_nodes"):
        result.details[key] = 0
    result.details["nodes_folded"] = lowered
    for _ in range(MAX_ROUNDS):
        notes = PassResult()  # this round's reasons: a later round may fold what an earlier one had to leave
        reshaped = {
            "shapes_folded": _fold_shapes(graph) + shapes.fold_shape_slices(graph),
            "nodes_folded": _fold_constants(graph, result),
            "noops_removed": _remove_noops(graph),
            "reshape_dims_copied": shapes.reshape_copy_dims(graph, notes),
            "transposes_merged": merges.merge_transposes(graph, notes),
            "reshapes_merged": merges.merge_reshapes(graph, notes),
            "casts_merged": merges.merge_casts(graph, notes),
            "dense_to_gemm": merges.matmul_add_to_gemm(graph, notes),
        }
        kept = {
            "identity_dropout_removed": _remove_passthrough(graph, result),
            "duplicate_nodes": merges.merge_duplicates(graph, notes),
        }
        for key, count in {**reshaped, **kept}.items():
            result.details[key] += count
        if not any(reshaped.values()) and not any(kept.values()):
            break
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        if any(reshaped.values()):
            shapes.infer_shapes(graph)  # what folding made static may let the next round fold more
    result.skipped = list(dict.fromkeys(result.skipped + notes.skipped))  # a reason repeated by later rounds counts once
    result.details["duplicate_initializers"] = _dedupe_initializers(graph)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    result.changed = sum(result.details.values())
    return result


def _bypass(graph: gs.Graph, node: gs.Node, result: PassResult) -> bool:
    """Remove a node whose first output equals its first input; False (with a reason) when impossible."""
    x, y = node.inputs[0], node.outputs[0]
    if y not in graph.outputs:
        replace_uses(y, x)
        detach(node)
        return True
    # The output name is part of the model's interface: let x's producer write y directly.
    prev = producer(x)
    if prev is None or x in graph.outputs or len(x.outputs) != 1:
        result.skip(f"{label(node)}: feeds graph output '{y.name}' from a graph input, constant or shared tensor; kept")
        return False
    index = prev.outputs.index(x)
    detach(node)
    prev.outputs[index] = y
    return True


def _remove_passthrough(graph: gs.Graph, result: PassResult) -> int:
    removed = 0
    for node in list(graph.nodes):
        if not node.inputs or not node.outputs or not (is_standard(node, "Identity") or is_standard(node, "Dropout")):
            continue
        if node.op == "Dropout":
            mode = node.inputs[2] if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
            if mode is not None and not (isinstance(mode, gs.Constant) and not bool(np.asarray(mode.values))):
                result.skip(f"{label(node)}: training_mode is not a constant false; kept")
                continue
            if len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1] in graph.outputs):
                result.skip(f"{label(node)}: its mask output is used; kept")
                continue
        removed += _bypass(graph, node, result)
    return removed


def _castlike_to_cast(graph: gs.Graph) -> int:
    changed = 0
    for node in graph.nodes:
        if not is_standard(node, "CastLike") or len(node.inputs) != 2:
            continue
        dtype = node.inputs[1].dtype
        if dtype is None:
            continue
        try:
            to = dtype if isinstance(dtype, int) else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        except (TypeError, KeyError):
            continue
        node.op = "Cast"
        node.attrs = {"to": int(to), **({"saturate": node.attrs["saturate"]} if "saturate" in node.attrs else {})}
        node.inputs = [node.inputs[0]]
        changed += 1
    return changed


def _lower_constant_nodes(graph: gs.Graph) -> int:
    """Turn ``Constant`` nodes into constant tensors (initializers); return how many."""
    lowered = 0
    for node in list(graph.nodes):
        if not is_standard(node, "Constant") or len(node.attrs) != 1 or len(node.outputs) != 1 or node.outputs[0] in graph.outputs:
            continue
        key, attr = next(iter(node.attrs.items()))
        if key == "value" and isinstance(attr, gs.Constant):
            values = attr.values
        elif key in ("value_float", "value_floats"):
            values = np.array(attr, dtype=np.float32)
        elif key in ("value_int", "value_ints"):
            values = np.array(attr, dtype=np.int64)
        else:
            continue  # sparse or string values: leave them to the runtime
        out = node.outputs[0]
        node.outputs.clear()
        out.to_constant(np.asarray(values))
        lowered += 1
    if lowered:
        graph.cleanup()
    return lowered


def _fold_shapes(graph: gs.Graph) -> int:
    """Fold ``Shape`` (honouring its ``start``/``end``) and ``Shape -> Gather`` of static dimensions.

    Done here rather than by ``fold_constants(fold_shapes=True)`` because
    onnx-graphsurgeon 0.6.1 ignores Shape's ``start``/``end`` attributes
    (opset 15) and would fold ``Shape(x, start=1)`` to the whole shape.
    """
    folded = 0
    for node in list(graph.nodes):
        if not is_standard(node, "Shape") or not node.inputs or node.inputs[0].shape is None or not node.outputs:
            continue
        dims = list(node.inputs[0].shape)[int(node.attrs.get("start", 0)) : node.attrs.get("end")]
        out = node.outputs[0]
        if all(isinstance(dim, int) and dim >= 0 for dim in dims) and out not in graph.outputs:
            out.to_constant(np.array(dims, dtype=np.int64))
            out.inputs.clear()
            folded += 1
            continue
        for gather in list(out.outputs):
            if not is_standard(gather, "Gather") or gather.attrs.get("axis", 0) != 0 or not isinstance(gather.inputs[1], gs.Constant):
                continue
            indices = np.asarray(gather.inputs[1].values)
            if not all(-len(dims) <= int(i) < len(dims) for i in indices.reshape(-1)):
                continue
            picked = [dims[int(i)] for i in indices.reshape(-1)]
            if not all(isinstance(dim, int) and dim >= 0 for dim in picked) or gather.outputs[0] in graph.outputs:
                continue
            gather.outputs[0].to_constant(np.array(picked, dtype=np.int64).reshape(indices.shape))
            gather.outputs[0].inputs.clear()
            gather.inputs.clear()
            folded += 1
    return folded


def _fold_constants(graph: gs.Graph, result: PassResult) -> int:
    if not any(_foldable_start(node) for node in graph.nodes):
        return 0  # nothing computed from constants alone: skip the ORT round trip
    before = len(graph.nodes)
    try:
        with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.ERROR):
            graph.fold_constants(fold_shapes=False, size_threshold=FOLD_SIZE_LIMIT, error_ok=True).cleanup()
    except Exception as exc:  # folding is an optimisation: report and carry on
        first_line = (str(exc).splitlines() or [""])[0]
        result.skip(f"constant folding failed ({type(exc).__name__}: {first_line}); graph left unfolded")
    graph.toposort()
    return max(0, before - len(graph.nodes))


def _foldable_start(node: gs.Node) -> bool:
    """A node that constant folding could remove: a Constant, a Shape, or one computed from constants only."""
    if node.op == "Constant":
        return True
    inputs = [tensor for tensor in node.inputs if not tensor.is_empty()]
    return bool(inputs) and all(isinstance(tensor, gs.Constant) for tensor in inputs) and not node.op.endswith("QuantizeLinear")


def _remove_noops(graph: gs.Graph) -> int:
    removed = 0
    for node in list(graph.nodes):
        if not node.inputs or not node.outputs or node.outputs[0] in graph.outputs:
            continue
        x, y = node.inputs[0], node.outputs[0]
        if is_standard(node, "Cast"):
            same = x.dtype is not None and onnx_type(x.dtype) == node.attrs.get("to")
        elif is_standard(node, "Expand") and isinstance(node.inputs[1], gs.Constant):
            same = _expand_is_noop(x.shape, node.inputs[1].values)
        elif is_standard(node, "Reshape") or is_standard(node, "Squeeze"):
            same = x.shape is not None and all(isinstance(dim, int) for dim in x.shape) and same_shape(x, y)
        elif is_standard(node, "Transpose"):
            same = merges.is_identity_transpose(node)
        else:
            continue
        if not same:
            continue
        replace_uses(y, x)
        detach(node)
        removed += 1
    return removed


def _expand_is_noop(shape, target: np.ndarray) -> bool:
    """True when ``Expand(x, target)`` returns x unchanged (each target dim is 1 or x's own static dim)."""
    if shape is None or target.ndim != 1 or target.size > len(shape):
        return False
    dims = list(shape)[len(shape) - target.size :]
    return all(int(want) == 1 or (isinstance(dim, int) and dim == int(want)) for want, dim in zip(target, dims))


def _dedupe_initializers(graph: gs.Graph) -> int:
    """Make nodes share one constant per distinct (dtype, shape, values); return how many were merged.

    Constants are grouped by dtype and shape first (known without loading
    the values); only within a group are values loaded and compared, a few
    bytes first, all of them when those match.
    """
    outputs = set(id(tensor) for tensor in graph.outputs)
    uses: dict[int, list[tuple[gs.Node, int]]] = {}
    groups: dict[tuple, list[gs.Constant]] = {}
    for node in graph.nodes:
        for index, tensor in enumerate(node.inputs):
            if not isinstance(tensor, gs.Constant) or id(tensor) in outputs:
                continue
            if id(tensor) not in uses:
                uses[id(tensor)] = []
                values = tensor._values  # noqa: SLF001 - LazyValues know shape and dtype without loading
                groups.setdefault((str(values.dtype), str(tensor.export_dtype), tuple(values.shape)), []).append(tensor)
            uses[id(tensor)].append((node, index))
    merged = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        canonical: list[tuple[bytes, gs.Constant]] = []
        for tensor in members:
            values = tensor.values
            if not isinstance(values, np.ndarray):
                continue
            flat = np.ascontiguousarray(values).reshape(-1)
            sample = flat[:16].tobytes() + flat[-16:].tobytes()
            first = next((kept for kept_sample, kept in canonical if kept_sample == sample and np.array_equal(kept.values, values, equal_nan=False) and _same_bits(kept.values, values)), None)
            if first is None:
                canonical.append((sample, tensor))
                continue
            for node, index in uses[id(tensor)]:
                node.inputs[index] = first
            merged.add(tensor.name)
    return len(merged)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Byte-equal (``array_equal`` calls 0.0 and -0.0 equal; their bytes differ)."""
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
