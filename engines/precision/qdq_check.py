"""The TensorRT Q/DQ placement check: does a Q/DQ graph obey TensorRT's explicit-quantization rules?

:func:`check_tensorrt_qdq_placement` lists every violation, one line each; the
``tensorrt`` emitter (:mod:`deploy_res.engines.precision.qdq`) is tested against it,
and so is any Q/DQ ONNX a user brings.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from deploy_res.core.onnx_io import load_onnx
from deploy_res.engines.precision.qdq import WEIGHTED_OPS, _ensure_names, _weight_axis, residual_skips

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _const_array(graph: gs.Graph, tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if tensor.inputs and tensor.inputs[0].op == "Constant":
        return np.asarray(tensor.inputs[0].attrs["value"].values)
    return None


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def check_tensorrt_qdq_placement(model: onnx.ModelProto | str | os.PathLike) -> list[str]:
    """Violations of TensorRT's Q/DQ placement rules in ``model``, one line each (empty: all obeyed).

    Checked node by node:

    1. every Conv/Gemm data input and weight comes from a DequantizeLinear; an
       activation's DQ is fed by a QuantizeLinear, a weight's by an int8
       constant (or a Q of a constant);
    2. every Q/DQ has an explicit int8 zero point that is all zeros;
    3. weight scales are per-channel on the output-channel axis (Conv: 0;
       Gemm: 0 with transB=1, else 1), one positive scale per channel;
    4. activation scales are per-tensor (one positive value);
    5. the skip input of every residual Add comes from a DequantizeLinear;
    6. a Q on a Conv/Gemm output is allowed only when its DQ feeds a
       quantised consumer (a Conv/Gemm, or a residual Add as its skip);
    7. no Q/DQ anywhere else ("be conservative"): every DQ output feeds only
       Conv/Gemm inputs or residual skips, and every Q output feeds only DQs.
    """
    graph = gs.import_onnx(load_onnx(model))
    graph.toposort()
    _ensure_names(graph)
    problems: list[str] = []
    skips = residual_skips(graph)
    # consumers that legitimately take a DQ output: (node name, input index)
    allowed_uses: set[tuple[str, int]] = set()

    for node in graph.nodes:
        if node.op in WEIGHTED_OPS:
            n_checked = 2 if len(node.inputs) >= 2 else 1
            for index in range(n_checked):
                allowed_uses.add((node.name, index))
                tensor = node.inputs[index]
                dq = _producer(tensor)
                role = "data input" if index == 0 else "weight"
                if dq is None or dq.op != "DequantizeLinear":
                    problems.append(f"{node.op} {node.name!r}: {role} {tensor.name!r} does not come from DequantizeLinear")
                    continue
                source = dq.inputs[0]
                q = _producer(source)
                from_q = q is not None and q.op == "QuantizeLinear"
                constant = _const_array(graph, q.inputs[0] if from_q else source) is not None
                if index == 1 and constant:
                    _check_weight_dq(node, dq, graph, problems)
                else:
                    if not from_q:
                        problems.append(f"{node.op} {node.name!r}: {role} DQ {dq.name!r} is not fed by a QuantizeLinear")
                    _check_per_tensor(dq, graph, problems)
        elif node.op == "Add" and node.name in skips:
            index = skips[node.name]
            allowed_uses.add((node.name, index))
            tensor = node.inputs[index]
            dq = _producer(tensor)
            if dq is None or dq.op != "DequantizeLinear":
                problems.append(f"residual Add {node.name!r}: skip input {tensor.name!r} does not come through Q/DQ")
            else:
                q = _producer(dq.inputs[0])
                if q is None or q.op != "QuantizeLinear":
                    problems.append(f"residual Add {node.name!r}: skip DQ {dq.name!r} is not fed by a QuantizeLinear")
                _check_per_tensor(dq, graph, problems)

    for node in graph.nodes:
        if node.op in _QDQ:
            _check_zero_point(node, graph, problems)
        if node.op == "DequantizeLinear":
            for out in node.outputs:
                if out in graph.outputs:
                    problems.append(f"DequantizeLinear {node.name!r} feeds a graph output")
                for consumer in out.outputs:
                    for index, tensor in enumerate(consumer.inputs):
                        if tensor is out and (consumer.name, index) not in allowed_uses:
                            problems.append(f"DequantizeLinear {node.name!r} feeds {consumer.op} {consumer.name!r} input {index}, which should stay unquantised")
        if node.op == "QuantizeLinear":
            for out in node.outputs:
                for consumer in out.outputs:
                    if consumer.op != "DequantizeLinear":
                        problems.append(f"QuantizeLinear {node.name!r} feeds {consumer.op} {consumer.name!r} instead of a DequantizeLinear")
            producer = _producer(node.inputs[0])
            if producer is not None and producer.op in WEIGHTED_OPS:
                uses = [(c.name, i) for out in node.outputs for dq in out.outputs for dq_out in dq.outputs for c in dq_out.outputs for i, t in enumerate(c.inputs) if t is dq_out]
                if not uses or any(use not in allowed_uses for use in uses):
                    problems.append(f"QuantizeLinear {node.name!r} quantises the output of {producer.op} {producer.name!r} without a quantised consumer")
    return problems


def _check_zero_point(node: gs.Node, graph: gs.Graph, problems: list[str]) -> None:
    if len(node.inputs) < 3:
        problems.append(f"{node.op} {node.name!r} has no zero point (it would default to uint8)")
        return
    zero = _const_array(graph, node.inputs[2])
    if zero is None:
        problems.append(f"{node.op} {node.name!r}: zero point is not a constant")
    elif zero.dtype != np.int8:
        problems.append(f"{node.op} {node.name!r}: zero point is {zero.dtype}, TensorRT needs int8")
    elif np.any(zero != 0):
        problems.append(f"{node.op} {node.name!r}: zero point is not 0 (TensorRT needs symmetric quantisation)")


def _check_per_tensor(dq: gs.Node, graph: gs.Graph, problems: list[str]) -> None:
    scale = _const_array(graph, dq.inputs[1])
    if scale is None or scale.size != 1:
        problems.append(f"activation DQ {dq.name!r}: scale is not per-tensor")
    elif not scale.item() > 0:
        problems.append(f"activation DQ {dq.name!r}: scale {scale.item()} is not positive")


def _check_weight_dq(node: gs.Node, dq: gs.Node, graph: gs.Graph, problems: list[str]) -> None:
    want_axis = _weight_axis(node)
    weight = _const_array(graph, dq.inputs[0])
    if weight is None:
        q = _producer(dq.inputs[0])
        weight = _const_array(graph, q.inputs[0]) if q is not None else None
    scale = _const_array(graph, dq.inputs[1])
    if weight is None or scale is None:
        problems.append(f"{node.op} {node.name!r}: weight or its scale is not constant")
        return
    axis = int(dq.attrs.get("axis", 1))
    axis = axis + weight.ndim if axis < 0 else axis
    channels = weight.shape[want_axis]
    if scale.ndim != 1 or (scale.size == 1 and channels != 1):
        problems.append(f"{node.op} {node.name!r}: weight scale has shape {scale.shape}, expected per-channel ({channels},)")
    elif axis != want_axis:
        problems.append(f"{node.op} {node.name!r}: weight DQ axis is {axis}, expected {want_axis} (output channels)")
    elif scale.size != channels:
        problems.append(f"{node.op} {node.name!r}: weight scale has shape {scale.shape}, expected per-channel ({channels},)")
    elif not np.all(scale > 0):
        problems.append(f"{node.op} {node.name!r}: weight scales must be positive")
