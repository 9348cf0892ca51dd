"""Cleanup steps that merge nodes: duplicates, Transpose/Reshape/Cast pairs, MatMul + Add.

Each step rewrites the graph in place, returns how many places it changed,
and leaves alone (with a reason where the user could care) every case it
does not handle. :func:`deploy_res.exporters.passes.cleanup.cleanup` runs
them; the pass runner checks the result numerically like every pass. The
shape steps that run beside them are :mod:`deploy_res.exporters.passes.shapes`.

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

from deploy_res.exporters.passes._common import LIGHT_BYTES, PassResult, constant_nbytes, detach, is_standard, label, onnx_type, producer, replace_uses

_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}


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
    if isinstance(tensor, gs.Constant) and constant_nbytes(tensor) <= LIGHT_BYTES and isinstance(tensor.values, np.ndarray):
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
