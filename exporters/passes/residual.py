"""Residual connections: fold constant branch scales, fuse or expose the skip Adds per target.

- :func:`fold_residual_scale` — ``x + scale * Conv(...)`` (Inception-ResNet) becomes
  ``x + Conv'(...)`` with the scale folded into the Conv's weights and bias.
- :func:`fuse_residual_ort` — for ONNX Runtime: ``Conv -> Add(skip) [-> Relu]``
  becomes one ``com.microsoft.FusedConv`` with the skip as its fourth input
  ``Z`` (``activation="Relu"`` when a Relu follows). ORT does this itself
  only for its CPU provider at ORT_ENABLE_ALL; the pre-fused graph runs fused
  at every level. The contrib schema: inputs ``X, W, B, Z``, attributes of
  Conv plus ``activation`` / ``activation_params``; a zero bias is added
  when the Conv has none (ORT's own fusion only fuses Convs with a bias).
- :func:`prepare_residual_tensorrt` — for TensorRT: standard ops only; removes
  no-op nodes (Identity, Dropout, same-type Cast, shape-preserving
  Reshape/Flatten/Squeeze/Unsqueeze/Expand) between a Conv, the residual Add
  and its Relu, so TensorRT's Conv+Add+ReLU fusion applies, and lists every
  residual Add in its report (:func:`find_residual_adds`, the one finder of
  :mod:`deploy_res.core.residual`, by which the INT8 stage quantises the skip
  inputs).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx_graphsurgeon as gs

from deploy_res.core.residual import is_residual_add, residual_adds
from deploy_res.exporters.passes._common import (
    Names,
    PassResult,
    constant,
    detach,
    float_constant,
    is_standard,
    label,
    producer,
    same_shape,
    sole_consumer,
)

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_NOOP_OPS = ("Identity", "Dropout", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")


def fold_residual_scale(graph: gs.Graph) -> PassResult:
    """Fold ``Mul(Conv(...), c)`` with a constant scalar or per-output-channel ``c`` into the Conv.

    The Conv output must have no other reader. Covers Inception-ResNet's
    ``x + scale * branch``; any Mul of a Conv output by such a constant is
    folded the same way (it is exact wherever it appears).
    ``details["residual"]`` counts the folds whose Mul feeds an Add.
    """
    result = PassResult(details={"residual": 0})
    names = Names(graph)
    for mul in [node for node in graph.nodes if is_standard(node, "Mul")]:
        if len(mul.inputs) != 2:
            continue
        for index in (0, 1):
            branch, scale_tensor = mul.inputs[index], mul.inputs[1 - index]
            conv = producer(branch)
            scale = float_constant(scale_tensor)
            if conv is not None and is_standard(conv, "Conv") and scale is not None:
                break
        else:
            continue  # not a Conv output times a constant: nothing to report
        if sole_consumer(graph, branch) is not mul:
            result.skip(f"{label(mul)}: the output of {label(conv)} has another consumer")
            continue
        weight = float_constant(conv.inputs[1])
        if weight is None:
            result.skip(f"{label(mul)}: the weight of {label(conv)} is not a constant")
            continue
        per_channel = _per_channel(scale, weight.shape[0], weight.ndim)
        if per_channel is None:
            result.skip(f"{label(mul)}: scale of shape {list(scale.shape)} is not a scalar or per-output-channel")
            continue
        has_bias = len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
        bias = float_constant(conv.inputs[2]) if has_bias else np.zeros(weight.shape[0])
        if bias is None:
            result.skip(f"{label(mul)}: the bias of {label(conv)} is not a constant")
            continue
        s = per_channel.astype(np.float64)
        base = conv.name or conv.outputs[0].name
        new_w = weight.astype(np.float64) * s.reshape((-1,) + (1,) * (weight.ndim - 1))
        new_b = bias.astype(np.float64) * s
        conv.inputs = [conv.inputs[0], constant(names, f"{base}.weight_scaled", new_w.astype(weight.dtype)), constant(names, f"{base}.bias_scaled", new_b.astype(weight.dtype))]
        out = mul.outputs[0]
        detach(mul)
        conv.outputs = [out]
        result.changed += 1
        if any(is_standard(node, "Add") for node in out.outputs):
            result.details["residual"] += 1
    graph.cleanup().toposort()
    return result


def _per_channel(scale: np.ndarray, channels: int, rank: int) -> Optional[np.ndarray]:
    """``scale`` as a length-``channels`` vector when it broadcasts per output channel of a rank-``rank`` Conv output."""
    if scale.ndim > rank:  # broadcasting would raise the output's rank: folding it would change the shape
        return None
    if scale.size == 1:
        return np.full(channels, scale.reshape(()), dtype=np.float64)
    shape = (1,) * (rank - scale.ndim) + scale.shape
    if shape[1] != channels or any(dim != 1 for axis, dim in enumerate(shape) if axis != 1):
        return None
    return scale.reshape(channels)


def fuse_residual_ort(graph: gs.Graph) -> PassResult:
    """Replace ``Conv -> Add(skip) [-> Relu]`` by ``com.microsoft.FusedConv(X, W, B, Z=skip)``.

    Guards: the Add has two variable inputs of the same known shape (no
    broadcasting), one produced by a float32 Conv whose output nothing else
    reads (input 0 preferred: the main branch in ``branch + shortcut``). The
    Relu is fused when it is the Add's only reader.
    ``details`` counts ``with_relu`` and ``bias_added``.
    """
    result = PassResult(details={"with_relu": 0, "bias_added": 0})
    names = Names(graph)
    for add in [node for node in graph.nodes if is_standard(node, "Add")]:
        if len(add.inputs) != 2 or any(isinstance(tensor, gs.Constant) for tensor in add.inputs):
            continue  # a bias or shift, not a residual connection
        conv, reasons = None, []
        for index in (0, 1):
            candidate = producer(add.inputs[index])
            reason = _fusable_conv(graph, add, index, candidate)
            if reason is None:
                conv, branch, skip = candidate, add.inputs[index], add.inputs[1 - index]
                break
            reasons.append(f"input {index} {reason}")
        if conv is None:
            result.skip(f"{label(add)}: not fused ({'; '.join(reasons)})")
            continue
        weight = conv.inputs[1]
        has_bias = len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
        if has_bias:
            bias = conv.inputs[2]
        else:
            bias = constant(names, f"{conv.name or branch.name}.bias_zero", np.zeros(weight.shape[0], dtype=np.float32))
            result.details["bias_added"] += 1
        attrs = {key: value for key, value in conv.attrs.items() if key in _CONV_ATTRS}
        relu = sole_consumer(graph, add.outputs[0])
        if relu is not None and not is_standard(relu, "Relu"):
            relu = None
        if relu is not None:
            attrs["activation"] = "Relu"
            result.details["with_relu"] += 1
        out = (relu or add).outputs[0]
        x = conv.inputs[0]
        base = conv.name or branch.name
        detach(conv, add, *([relu] if relu else []))
        graph.nodes.append(gs.Node("FusedConv", names(f"{base}_fused"), attrs=attrs, inputs=[x, weight, bias, skip], outputs=[out], domain="com.microsoft"))
        result.changed += 1
    graph.cleanup().toposort()
    return result


def _fusable_conv(graph: gs.Graph, add: gs.Node, index: int, conv: Optional[gs.Node]) -> Optional[str]:
    """Why the Add's input ``index`` cannot be fused into its producer; None when it can."""
    branch, skip = add.inputs[index], add.inputs[1 - index]
    if conv is None or not is_standard(conv, "Conv"):
        return f"comes from {conv.op if conv is not None else 'a graph input'}, not a Conv"
    if sole_consumer(graph, branch) is not add:
        return f"comes from {label(conv)}, whose output has other readers"
    if not same_shape(branch, skip):
        return f"has shape {branch.shape}, not known to equal the other input's {skip.shape}"
    weight = conv.inputs[1]
    dtype = weight.dtype if isinstance(weight, gs.Constant) else branch.dtype
    if dtype is None or np.dtype(dtype) != np.float32:
        return f"comes from {label(conv)}, not float32 (ORT's CPU FusedConv is float32 only)"
    if not isinstance(weight, gs.Constant) and weight.shape is None:
        return f"comes from {label(conv)}, whose weight shape is unknown"
    return None


def prepare_residual_tensorrt(graph: gs.Graph) -> PassResult:
    """Make every Conv -> Add -> Relu contiguous (standard ops only) and list the residual Adds.

    Removes no-op nodes between a residual Add and the Conv feeding it, and
    between the Add and a following Relu. A node that is not provably a no-op
    (a Cast that changes the type, a Reshape that changes the shape) or that
    has other readers is left in place and reported.
    ``details["residual_adds"]`` is :func:`find_residual_adds` of the result.
    """
    result = PassResult()
    for add in [node for node in graph.nodes if is_standard(node, "Add")]:
        if not is_residual_add(add):
            continue
        for index in (0, 1):
            result.changed += _strip_noops_before(graph, add, index, result)
        result.changed += _strip_noops_after(graph, add, result)
    graph.cleanup().toposort()
    result.details["residual_adds"] = find_residual_adds(graph)
    return result


def _is_noop(node: gs.Node) -> bool:
    """True when ``node`` provably passes its first input through unchanged."""
    if not is_standard(node, node.op) or node.op not in _NOOP_OPS or not node.inputs or not node.outputs:
        return False
    if node.op == "Identity":
        return True
    if node.op == "Dropout":
        mode = node.inputs[2] if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
        mask_used = len(node.outputs) > 1 and bool(node.outputs[1].outputs)
        return not mask_used and (mode is None or (isinstance(mode, gs.Constant) and not bool(np.asarray(mode.values))))
    x, y = node.inputs[0], node.outputs[0]
    if node.op == "Cast":
        return x.dtype is not None and y.dtype is not None and np.dtype(x.dtype) == np.dtype(y.dtype)
    return x.shape is not None and y.shape is not None and same_shape(x, y)


def _strip_noops_before(graph: gs.Graph, add: gs.Node, index: int, result: PassResult) -> int:
    removed = 0
    while True:
        node = producer(add.inputs[index])
        if node is None or node.op not in _NOOP_OPS:
            return removed
        if not _is_noop(node):
            result.skip(f"{label(add)}: {label(node)} on input {index} is not a no-op; left in place")
            return removed
        if sole_consumer(graph, node.outputs[0]) is not add:
            result.skip(f"{label(add)}: {label(node)} on input {index} has other readers; left in place")
            return removed
        add.inputs[index] = node.inputs[0]
        detach(node)
        removed += 1


def _strip_noops_after(graph: gs.Graph, add: gs.Node, result: PassResult) -> int:
    """Remove a chain of no-op nodes between the Add and a Relu (only when the chain ends in a Relu)."""
    chain, tensor = [], add.outputs[0]
    while True:
        node = sole_consumer(graph, tensor)
        if node is None or not _is_noop(node):
            break
        chain.append(node)
        tensor = node.outputs[0]
    relu = sole_consumer(graph, tensor)
    if not chain or relu is None or not is_standard(relu, "Relu"):
        return 0
    relu.inputs[0] = add.outputs[0]
    detach(*chain)
    return len(chain)


def find_residual_adds(graph: gs.Graph) -> list[dict[str, Any]]:
    """Every residual Add, by the one finder the INT8 stage also uses (:func:`deploy_res.core.residual.residual_adds`)."""
    return residual_adds(graph)


