"""Fold inference-mode BatchNormalization into the layer before it (or after it).

BatchNormalization in inference computes, per channel ``c`` (axis 1)::

    y = (x - mean[c]) / sqrt(var[c] + eps) * scale[c] + B[c]  =  s[c] * x + t[c]

with ``s = scale / sqrt(var + eps)`` and ``t = B - mean * s``. The pass folds
``s`` and ``t`` (computed in float64, stored in the weight's own dtype):

- after a **Conv**: ``W'[o] = s[o] * W[o]``, ``b' = s * b + t`` (``b = 0`` when
  the Conv has no bias). ``W``'s axis 0 is the output channel whatever the
  group count, so grouped and depthwise convolutions fold the same way;
- after a **Gemm** with a constant ``B``: scale the output columns of ``B``,
  ``C' = s * beta * C + t`` (``beta`` becomes 1);
- after a 2-D **MatMul** with a constant right operand: scale its columns and
  add ``t`` with an ``Add``;
- **lone BN** (nothing foldable before it): into the following Conv when that
  is exact (the Conv pads nothing, so every input value it reads went through
  the BN), else a per-channel ``Mul`` + ``Add``.

Left as BatchNormalization, with a reason: training mode, extra outputs in
use, a parameter that is not a constant, a producer whose output has another
reader (folding would change what that reader sees), a producer whose
weights are not constants, and ConvTranspose.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from deploy_res.exporters.passes._common import (
    Names,
    PassResult,
    constant,
    detach,
    float_constant,
    is_standard,
    label,
    producer,
    rank_of,
    sole_consumer,
)

_BN_PARAMS = ("scale", "B", "mean", "var")

# Ops whose output has the rank of their first input / the largest rank of their inputs (broadcasting).
_SAME_RANK = {"Abs", "BatchNormalization", "Cast", "Clip", "Dropout", "Elu", "Erf", "Exp", "Gelu", "HardSigmoid", "HardSwish",
              "Identity", "LeakyRelu", "Log", "LogSoftmax", "Neg", "Relu", "Sigmoid", "Softmax", "Softplus", "Sqrt", "Tanh",
              "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LayerNormalization", "InstanceNormalization", "Pad", "Slice"}
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Where"}


def fold_batchnorm(graph: gs.Graph) -> PassResult:
    """Fold every BatchNormalization it can; see the module docstring for the cases.

    Returns a :class:`PassResult` whose ``details`` count folds by kind
    (``conv``, ``gemm``, ``matmul``, ``next_conv``, ``mul_add``).
    """
    result = PassResult(details={"conv": 0, "gemm": 0, "matmul": 0, "next_conv": 0, "mul_add": 0})
    names = Names(graph)
    for bn in [node for node in graph.nodes if is_standard(node, "BatchNormalization")]:
        if bn.attrs.get("training_mode", 0):
            result.skip(f"{label(bn)}: training_mode=1")
            continue
        if bn.attrs.get("spatial", 1) == 0:
            result.skip(f"{label(bn)}: spatial=0 (per-element statistics, opset < 9)")
            continue
        if any(out.outputs or out in graph.outputs for out in bn.outputs[1:]):
            result.skip(f"{label(bn)}: its running-statistics outputs are used")
            continue
        params = [float_constant(tensor) for tensor in bn.inputs[1:5]]
        missing = [name for name, value in zip(_BN_PARAMS, params) if value is None]
        if missing:
            result.skip(f"{label(bn)}: parameter {', '.join(missing)} is not a constant")
            continue
        scale, bias, mean, var = (value.astype(np.float64) for value in params)
        s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        t = bias - mean * s

        x = bn.inputs[0]
        prev = producer(x)
        if prev is not None and prev.op in ("Conv", "Gemm", "MatMul", "ConvTranspose") and is_standard(prev, prev.op):
            if prev.op == "ConvTranspose":
                result.skip(f"{label(bn)}: follows ConvTranspose '{prev.name}', which this pass does not fold")
                continue
            if prev.op != "MatMul" or _matmul_rank2(prev, x):
                if sole_consumer(graph, x) is not bn:
                    result.skip(f"{label(bn)}: the output of {label(prev)} has another consumer; left unfolded")
                    continue
                folder = {"Conv": _fold_into_conv, "Gemm": _fold_into_gemm, "MatMul": _fold_into_matmul}[prev.op]
                reason = folder(graph, names, prev, bn, s, t)
                if reason:
                    result.skip(f"{label(bn)}: {reason}")
                    continue
                result.changed += 1
                result.details[prev.op.lower()] += 1
                continue

        # Lone BN: fold forward into the next Conv when exact, else Mul + Add.
        nxt = sole_consumer(graph, bn.outputs[0])
        if nxt is not None and is_standard(nxt, "Conv") and nxt.inputs[0] is bn.outputs[0] and _fold_into_next_conv(names, bn, nxt, s, t):
            result.changed += 1
            result.details["next_conv"] += 1
            continue
        reason = _to_mul_add(graph, names, bn, s, t)
        if reason:
            result.skip(f"{label(bn)}: {reason}")
            continue
        result.changed += 1
        result.details["mul_add"] += 1

    graph.cleanup().toposort()
    return result


def _take_output(bn: gs.Node, new_producer: gs.Node) -> None:
    """Make ``new_producer`` compute the BN's output tensor (keeping its name) and drop the BN."""
    out = bn.outputs[0]
    detach(bn)
    new_producer.outputs = [out]


def _fold_into_conv(graph: gs.Graph, names: Names, conv: gs.Node, bn: gs.Node, s: np.ndarray, t: np.ndarray) -> Optional[str]:
    weight = float_constant(conv.inputs[1])
    if weight is None:
        return f"the weight of {label(conv)} is not a constant float tensor"
    bias = float_constant(conv.inputs[2]) if len(conv.inputs) > 2 and not conv.inputs[2].is_empty() else np.zeros(weight.shape[0])
    if bias is None:
        return f"the bias of {label(conv)} is not a constant"
    if s.size != weight.shape[0]:
        return f"{s.size} BN channels but {label(conv)} has {weight.shape[0]} outputs"
    per_out = s.reshape((-1,) + (1,) * (weight.ndim - 1))
    new_w = (weight.astype(np.float64) * per_out).astype(weight.dtype)
    new_b = (bias.astype(np.float64) * s + t).astype(weight.dtype)
    base = conv.name or conv.outputs[0].name
    conv.inputs = [conv.inputs[0], constant(names, f"{base}.weight_bn", new_w), constant(names, f"{base}.bias_bn", new_b)]
    _take_output(bn, conv)
    return None


def _fold_into_gemm(graph: gs.Graph, names: Names, gemm: gs.Node, bn: gs.Node, s: np.ndarray, t: np.ndarray) -> Optional[str]:
    b = float_constant(gemm.inputs[1])
    if b is None or b.ndim != 2:
        return f"the B input of {label(gemm)} is not a constant 2-D float tensor"
    has_c = len(gemm.inputs) > 2 and not gemm.inputs[2].is_empty()
    c = float_constant(gemm.inputs[2]) if has_c else np.zeros(1)
    if c is None:
        return f"the C input of {label(gemm)} is not a constant"
    trans_b = bool(gemm.attrs.get("transB", 0))
    n_out = b.shape[0] if trans_b else b.shape[1]
    if s.size != n_out:
        return f"{s.size} BN channels but {label(gemm)} has {n_out} outputs"
    new_b = b.astype(np.float64) * (s[:, None] if trans_b else s[None, :])
    beta = float(gemm.attrs.get("beta", 1.0))
    new_c = np.asarray(c, dtype=np.float64) * beta * s + t  # broadcasts to (N,) or (M, N)
    base = gemm.name or gemm.outputs[0].name
    gemm.attrs["beta"] = 1.0
    gemm.inputs = [gemm.inputs[0], constant(names, f"{base}.B_bn", new_b.astype(b.dtype)), constant(names, f"{base}.C_bn", new_c.astype(b.dtype))]
    _take_output(bn, gemm)
    return None


def _matmul_rank2(matmul: gs.Node, out: gs.Tensor) -> bool:
    """True when a MatMul's output is known to be 2-D, so BN's channel axis 1 is its last axis."""
    return derived_rank(out) == 2


def derived_rank(tensor: gs.Tensor, depth: int = 0) -> Optional[int]:
    """The rank of ``tensor``: from its inferred shape, else derived from the op that produces it.

    ONNX shape inference leaves some ranks unknown that follow from the graph, e.g. a Reshape whose
    target is computed from the dynamic batch (``Concat(batch, -1)``, whose length is known, but not
    always carried to the Reshape's output) and every op below it. Derived: Reshape = the target's
    length, MatMul = numpy's matmul rule, Gemm/Flatten = 2, element-wise ops = their inputs' rank.
    """
    rank = rank_of(tensor)
    node = producer(tensor)
    if rank is not None or node is None or depth > 32:
        return rank
    inputs = [t for t in node.inputs if not t.is_empty()]
    if node.op in _SAME_RANK and inputs:
        return derived_rank(inputs[0], depth + 1)
    if node.op in _BROADCAST and inputs:
        ranks = [derived_rank(t, depth + 1) for t in inputs]
        return None if None in ranks else max(ranks)
    if node.op in ("Gemm", "Flatten"):
        return 2
    if node.op == "MatMul" and len(inputs) == 2:
        a, b = (derived_rank(t, depth + 1) for t in inputs)
        if a is None or b is None:
            return None
        if min(a, b) == 1:  # a 1-D operand loses its axis
            return max(a + b - 2, 0) if max(a, b) == 1 else max(a, b) - 1
        return max(a, b)
    if node.op == "Reshape" and len(inputs) == 2:
        target = inputs[1]
        if isinstance(target, gs.Constant):
            return int(np.asarray(target.values).size)
        if target.shape is not None and len(target.shape) == 1 and isinstance(target.shape[0], (int, np.integer)) and target.shape[0] >= 0:
            return int(target.shape[0])
    return None


def _fold_into_matmul(graph: gs.Graph, names: Names, matmul: gs.Node, bn: gs.Node, s: np.ndarray, t: np.ndarray) -> Optional[str]:
    b = float_constant(matmul.inputs[1])
    if b is None or b.ndim != 2:
        return f"the right operand of {label(matmul)} is not a constant 2-D float tensor"
    if s.size != b.shape[1]:
        return f"{s.size} BN channels but {label(matmul)} has {b.shape[1]} outputs"
    base = matmul.name or matmul.outputs[0].name
    matmul.inputs[1] = constant(names, f"{base}.B_bn", (b.astype(np.float64) * s[None, :]).astype(b.dtype))
    mid = gs.Variable(names(f"{base}_scaled"), dtype=matmul.outputs[0].dtype, shape=matmul.outputs[0].shape)
    out = bn.outputs[0]
    detach(bn)
    matmul.outputs = [mid]
    graph.nodes.append(gs.Node("Add", names(f"{base}_bn_shift"), inputs=[mid, constant(names, f"{base}.shift_bn", t.astype(b.dtype))], outputs=[out]))
    return None


def _fold_into_next_conv(names: Names, bn: gs.Node, conv: gs.Node, s: np.ndarray, t: np.ndarray) -> bool:
    """Fold ``y = s*x + t`` into the Conv reading ``y`` when the Conv pads nothing (exact); False otherwise."""
    weight = float_constant(conv.inputs[1])
    if weight is None:
        return False
    has_bias = len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
    bias = float_constant(conv.inputs[2]) if has_bias else np.zeros(weight.shape[0])
    if bias is None:
        return False
    if conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID") or any(conv.attrs.get("pads", [])):
        return False  # padded zeros would stand for x = 0, not for s*0 + t
    group = int(conv.attrs.get("group", 1))
    c_out, c_per_group = weight.shape[0], weight.shape[1]
    if s.size != group * c_per_group or c_out % group:
        return False
    # Input channel i of output channel o is channel (o // (c_out/group)) * c_per_group + i.
    channel = (np.arange(c_out) // (c_out // group))[:, None] * c_per_group + np.arange(c_per_group)[None, :]
    spatial = (1,) * (weight.ndim - 2)
    w64 = weight.astype(np.float64)
    new_w = w64 * s[channel].reshape(channel.shape + spatial)
    new_b = bias.astype(np.float64) + (w64 * t[channel].reshape(channel.shape + spatial)).reshape(c_out, -1).sum(axis=1)
    base = conv.name or conv.outputs[0].name
    x = bn.inputs[0]
    detach(bn)
    conv.inputs = [x, constant(names, f"{base}.weight_bn", new_w.astype(weight.dtype)), constant(names, f"{base}.bias_bn", new_b.astype(weight.dtype))]
    return True


def _to_mul_add(graph: gs.Graph, names: Names, bn: gs.Node, s: np.ndarray, t: np.ndarray) -> Optional[str]:
    x = bn.inputs[0]
    rank = derived_rank(x) or derived_rank(bn.outputs[0])
    if rank is None or rank < 2:
        return "lone BatchNormalization and the rank of its input is unknown (run shape inference first)"
    dtype = _float_dtype(x.dtype) or bn.inputs[1].values.dtype
    shape = (-1,) + (1,) * (rank - 2)
    base = bn.name or bn.outputs[0].name
    out = bn.outputs[0]
    mid = gs.Variable(names(f"{base}_scaled"), dtype=out.dtype, shape=out.shape)
    detach(bn)
    graph.nodes.append(gs.Node("Mul", names(f"{base}_mul"), inputs=[x, constant(names, f"{base}.scale_bn", s.reshape(shape).astype(dtype))], outputs=[mid]))
    graph.nodes.append(gs.Node("Add", names(f"{base}_add"), inputs=[mid, constant(names, f"{base}.shift_bn", t.reshape(shape).astype(dtype))], outputs=[out]))
    return None


def _float_dtype(dtype) -> Optional[np.dtype]:
    """``dtype`` as a NumPy float dtype, or None (unknown, bfloat16, not a float)."""
    try:
        dtype = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        return None
    return dtype if dtype is not None and dtype.type in (np.float16, np.float32, np.float64) else None
