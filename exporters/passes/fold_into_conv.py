"""Fold what other exporters leave around a Conv into the Conv itself: zero Pads and per-channel affine ops.

Files converted from TensorFlow/Keras (tf2onnx) and other tools often
express BatchNorm as ``Conv -> Sub(mean) -> Mul(scale) -> Add(shift)`` with
constant per-channel operands, and "SAME" padding as a ``Pad`` before the
Conv. :func:`fold_into_conv` folds both:

- ``Pad(x)`` with mode ``constant``, value 0 and non-negative amounts on the
  spatial axes only, read by nothing but a Conv (``auto_pad`` NOTSET):
  the amounts are added to the Conv's ``pads`` (a Conv pads with zeros too);
- ``Conv(...) op c`` for ``op`` in Add, Sub, Mul, Div with a constant float
  ``c`` that is a scalar or per output channel (shape ``(C, 1, 1)``,
  ``(1, C, 1, 1)``... never of higher rank than the Conv output), the Conv
  output read by nothing else: into the weights (``W' = s W``, one float32
  multiply) and bias (``b' = s b + t``, float64). A whole Sub/Mul/Add chain
  composes into one ``s, t`` first and folds at once. ``c - Conv(...)`` folds too (``s = -1``); ``c /
  Conv(...)`` is not affine and stays.

Left alone, with a reason where it matters: other Pad modes or values,
Pads on the batch or channel axis, negative pads, non-constant amounts,
Convs with ``auto_pad``, operands that broadcast along spatial axes, zero or
non-finite divisors, non-constant weights or bias, and Conv outputs with
other readers.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from deploy_res.exporters.passes._common import Names, PassResult, constant, detach, float_constant, is_standard, label, producer, sole_consumer

_AFFINE = ("Add", "Sub", "Mul", "Div")


def fold_into_conv(graph: gs.Graph) -> PassResult:
    """Fold zero Pads before and per-channel affine ops after every Conv it can; see the module docstring.

    ``details`` counts ``pads`` (Pads folded) and ``affine`` (Add/Sub/Mul/Div folded).
    """
    result = PassResult(details={"pads": 0, "affine": 0})
    names = Names(graph)
    for conv in [node for node in graph.nodes if is_standard(node, "Conv")]:
        if len(conv.inputs) < 2:
            continue
        reason = _fold_pad(graph, conv)
        if reason == "":
            result.details["pads"] += 1
        elif reason:
            result.skip(f"{label(conv)}: {reason}")
        folded, reason = _fold_affine_chain(graph, names, conv)
        result.details["affine"] += folded
        if reason:
            result.skip(f"{label(conv)}: {reason}")
    result.changed = result.details["pads"] + result.details["affine"]
    graph.cleanup().toposort()
    return result


# ---------------------------------------------------------------- Pad


def _int_constant(tensor) -> Optional[list[int]]:
    if not isinstance(tensor, gs.Constant):
        return None
    values = np.asarray(tensor.values)
    return [int(v) for v in values.reshape(-1)] if np.issubdtype(values.dtype, np.integer) else None


def _fold_pad(graph: gs.Graph, conv: gs.Node) -> Optional[str]:
    """"" when the Pad before ``conv`` was folded, a reason when it could not be, None when there is no Pad."""
    pad = producer(conv.inputs[0])
    if pad is None or not is_standard(pad, "Pad"):
        return None
    if sole_consumer(graph, conv.inputs[0]) is not conv:
        return f"the {label(pad)} before it has other readers; not folded"
    if pad.attrs.get("mode", "constant") not in ("constant", b"constant"):
        return f"{label(pad)} mode {pad.attrs['mode']!r} is not 'constant'; not folded"
    if conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return f"auto_pad={conv.attrs['auto_pad']!r}; {label(pad)} not folded"
    if "pads" in pad.attrs:  # opset < 11: attributes
        amounts, value = [int(v) for v in pad.attrs["pads"]], float(pad.attrs.get("value", 0.0))
    else:
        amounts = _int_constant(pad.inputs[1]) if len(pad.inputs) > 1 else None
        if amounts is None:
            return f"the amounts of {label(pad)} are not constant; not folded"
        value = 0.0
        if len(pad.inputs) > 2 and not pad.inputs[2].is_empty():
            fill = pad.inputs[2]
            if not isinstance(fill, gs.Constant) or np.asarray(fill.values).size != 1:
                return f"the fill value of {label(pad)} is not a constant; not folded"
            value = float(np.asarray(fill.values).reshape(-1)[0])
        if len(pad.inputs) > 3 and not pad.inputs[3].is_empty():
            return f"{label(pad)} has an axes input; not folded"
    if value != 0.0:
        return f"{label(pad)} pads with {value:g}, not 0; not folded"
    weight = conv.inputs[1]
    rank = len(weight.shape) if weight.shape is not None else None
    if rank is None or len(amounts) != 2 * rank:
        return f"{label(pad)} has {len(amounts)} amounts for a rank-{rank} Conv; not folded"
    begins, ends = amounts[:rank], amounts[rank:]
    if any(begins[:2]) or any(ends[:2]):
        return f"{label(pad)} pads the batch or channel axis; not folded"
    if any(v < 0 for v in amounts):
        return f"{label(pad)} crops (negative amounts); not folded"
    spatial = rank - 2
    old = [int(v) for v in conv.attrs.get("pads", [0] * (2 * spatial))]
    conv.attrs["pads"] = [old[i] + begins[2 + i] for i in range(spatial)] + [old[spatial + i] + ends[2 + i] for i in range(spatial)]
    conv.inputs[0] = pad.inputs[0]
    detach(pad)
    return ""


# ---------------------------------------------------------------- affine ops after a Conv


def _fold_affine_chain(graph: gs.Graph, names: Names, conv: gs.Node) -> tuple[int, Optional[str]]:
    """Fold the chain of affine ops reading ``conv``'s output; ``(ops folded, reason the chain stopped or None)``.

    The chain composes into one ``S * conv + T`` first, so the weights are
    rewritten once however long it is.
    """
    weight = float_constant(conv.inputs[1])
    has_bias = len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
    bias = float_constant(conv.inputs[2]) if has_bias else (np.zeros(weight.shape[0], weight.dtype) if weight is not None else None)
    ops: list[gs.Node] = []
    scale = shift = None
    reason = None
    out = conv.outputs[0] if conv.outputs else None
    while out is not None:
        step = _affine_step(graph, out, weight, bias)
        if step is None:
            break
        if isinstance(step, str):
            reason = step
            break
        op, s, t = step
        scale, shift = (s, t) if scale is None else (s * scale, s * shift + t)
        ops.append(op)
        out = op.outputs[0]
    if not ops:
        return 0, reason
    # One multiply per weight in (at least) float32: the composed scale is rounded once, the product once
    # (a relative error of ~1e-7; float64 throughout cost three times as much on large Convs).
    work = np.promote_types(weight.dtype, np.float32)
    new_w = (weight.astype(work, copy=False) * scale.astype(work).reshape((-1,) + (1,) * (weight.ndim - 1))).astype(weight.dtype, copy=False)
    b64 = bias.astype(np.float64) * scale + shift
    base = conv.name or conv.outputs[0].name
    conv.inputs = [conv.inputs[0], constant(names, f"{base}.weight_folded", new_w), constant(names, f"{base}.bias_folded", b64.astype(weight.dtype))]
    last = ops[-1].outputs[0]
    detach(*ops)
    conv.outputs = [last]
    return len(ops), reason


def _affine_step(graph: gs.Graph, out: gs.Tensor, weight: Optional[np.ndarray], bias: Optional[np.ndarray]):
    """The affine op reading ``out`` as ``(op, s, t)`` (its result is ``s * out + t``), a reason it cannot fold, or None."""
    op = sole_consumer(graph, out)
    if op is None or op.op not in _AFFINE or not is_standard(op, op.op) or len(op.inputs) != 2 or len(op.outputs) != 1:
        return None
    index = 0 if op.inputs[0] is out else 1
    c = float_constant(op.inputs[1 - index])
    if c is None or op.inputs[index] is not out or op.inputs[1 - index] is out:
        return None  # a residual Add or another variable operand: not ours
    if weight is None:
        return f"its weight is not a constant; {label(op)} not folded"
    if bias is None:
        return f"its bias is not a constant; {label(op)} not folded"
    per_channel = _per_channel(c, weight.shape[0], weight.ndim)
    if per_channel is None:
        return f"{label(op)}'s operand of shape {list(c.shape)} is not a scalar or per-output-channel (or has a higher rank than the Conv output); not folded"
    if op.op == "Div" and index == 1:
        return f"{label(op)} divides by the Conv output (not affine); not folded"
    if not np.all(np.isfinite(per_channel)) or (op.op == "Div" and np.any(per_channel == 0)):
        return f"{label(op)}'s operand has zeros or non-finite values; not folded"
    if c.dtype != weight.dtype:
        return f"{label(op)}'s operand is {c.dtype}, the weight {weight.dtype}; not folded"
    ones, zeros = np.ones_like(per_channel), np.zeros_like(per_channel)
    if op.op == "Add":
        return op, ones, per_channel
    if op.op == "Sub":
        return (op, ones, -per_channel) if index == 0 else (op, -ones, per_channel)
    if op.op == "Mul":
        return op, per_channel, zeros
    return op, 1.0 / per_channel, zeros


def _per_channel(c: np.ndarray, channels: int, rank: int) -> Optional[np.ndarray]:
    """``c`` as ``channels`` float64 values when it broadcasts over a rank-``rank`` Conv output along axis 1 only."""
    if c.ndim > rank:
        return None
    if c.size == 1:
        return np.full(channels, float(c.reshape(-1)[0]))
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if shape[1] != channels or any(dim != 1 for axis, dim in enumerate(shape) if axis != 1):
        return None
    return c.reshape(-1).astype(np.float64)
