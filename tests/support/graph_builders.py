"""Small hand-built ONNX graphs for the pass tests, and a helper that applies one pass and measures it."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from deploy_res.exporters.checks import compare_outputs, make_inputs, run_ort
from deploy_res.exporters.graph_io import graph_to_model

OPSET = 17
_ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}


def onnx_type(dtype) -> int:
    return _ONNX_TYPE[np.dtype(dtype).type]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def init(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values), name)


def bn_params(prefix: str, channels: int, dtype=np.float32, seed: int = 1) -> tuple[list[TensorProto], list[str]]:
    """BN scale/B/mean/var with small variances, so epsilon matters."""
    r = rng(seed)
    values = {
        "scale": r.uniform(0.5, 1.5, channels),
        "B": r.uniform(-0.5, 0.5, channels),
        "mean": r.uniform(-0.5, 0.5, channels),
        "var": r.uniform(0.001, 0.05, channels),
    }
    names = [f"{prefix}.{key}" for key in values]
    return [init(name, value.astype(dtype)) for name, value in zip(names, values.values())], names


def model(nodes, inputs, outputs, initializers=(), opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def value(name: str, shape: Sequence, dtype=np.float32):
    return helper.make_tensor_value_info(name, onnx_type(dtype), list(shape))


def conv_bn(
    groups: int = 1,
    channels: int = 64,
    bias: bool = True,
    eps: float = 1e-5,
    dtype=np.float32,
    param_dtype=None,
    second_consumer: bool = False,
    kernel: int = 3,
) -> onnx.ModelProto:
    """``input -> Conv(groups) -> BatchNormalization(eps) -> output`` (optionally the Conv output also feeds a Relu output)."""
    r = rng(0)
    weight = (r.standard_normal((channels, channels // groups, kernel, kernel)) * 0.2).astype(dtype)
    inits = [init("W", weight)]
    conv_inputs = ["input", "W"]
    if bias:
        inits.append(init("b", r.uniform(-1, 1, channels).astype(dtype)))
        conv_inputs.append("b")
    params, names = bn_params("bn", channels, param_dtype or dtype)
    nodes = [
        helper.make_node("Conv", conv_inputs, ["conv_out"], "conv", kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4, group=groups),
        helper.make_node("BatchNormalization", ["conv_out", *names], ["output"], "bn", epsilon=eps),
    ]
    outputs = [value("output", ["batch", channels, 6, 6], dtype)]
    if second_consumer:
        nodes.append(helper.make_node("Relu", ["conv_out"], ["side"], "side_relu"))
        outputs.append(value("side", ["batch", channels, 6, 6], dtype))
    return model(nodes, [value("input", ["batch", channels, 6, 6], dtype)], outputs, inits + params)


def apply(proto: onnx.ModelProto, pass_: Callable[[gs.Graph], object], rtol: float = 1e-4, batch: int = 3):
    """Apply ``pass_`` to ``proto``; return ``(result, optimised model, compare_outputs dict)``."""
    proto = onnx.shape_inference.infer_shapes(proto)
    graph = gs.import_onnx(proto)
    result = pass_(graph)
    after = graph_to_model(graph, proto)
    onnx.checker.check_model(after)
    feeds = make_inputs(proto, batch=batch, seed=5)
    check = compare_outputs(run_ort(proto, feeds), run_ort(after, feeds), rtol=rtol)
    return result, after, check


def ops(proto: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


def node(proto: onnx.ModelProto, op: str) -> Optional[onnx.NodeProto]:
    return next((n for n in proto.graph.node if n.op_type == op), None)
