"""FP16 conversion: float16 types inside, float32 at the edges unless asked, kept ops and nodes in float32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from deploy_res.core.errors import DeployResError
from deploy_res.engines.precision.fp16 import DEFAULT_KEEP_OP_TYPES, convert_fp16
from precision_helpers import mean_cosine, run_onnx


def _elem(value_info):
    return value_info.type.tensor_type.elem_type


def _producers(model):
    return {out: node for node in model.graph.node for out in node.output}


def _input_types(model, node):
    """Element types of ``node``'s inputs: initializer type, or the type its producer Cast writes."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    producers = _producers(model)
    types = []
    for name in node.input:
        if name in inits:
            types.append(inits[name])
        elif name in producers and producers[name].op_type == "Cast":
            types.append(next(a.i for a in producers[name].attribute if a.name == "to"))
        else:
            types.append(None)
    return types


def test_fp16_keeps_float32_io_and_converts_weights(digits_model):
    model = convert_fp16(str(digits_model.onnx_path))
    assert _elem(model.graph.input[0]) == TensorProto.FLOAT and _elem(model.graph.output[0]) == TensorProto.FLOAT
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert {i.data_type for i in model.graph.initializer if i.name in conv_weights} == {TensorProto.FLOAT16}
    x = digits_model.test_x[:32]
    assert mean_cosine(run_onnx(model, x), run_onnx(digits_model.onnx_path, x)) > 0.9999


def test_pure_fp16_interface_when_asked(digits_model):
    model = convert_fp16(onnx.load(str(digits_model.onnx_path)), keep_io_types=False)
    assert _elem(model.graph.input[0]) == TensorProto.FLOAT16 and _elem(model.graph.output[0]) == TensorProto.FLOAT16
    out = run_onnx(model, digits_model.test_x[:4].astype(np.float16))
    assert out.dtype == np.float16


def test_kept_op_types_and_nodes_stay_float32(digits_model):
    source = onnx.load(str(digits_model.onnx_path))
    gemm = next(n.name for n in source.graph.node if n.op_type == "Gemm")
    model = convert_fp16(source, keep_op_types=["GlobalAveragePool"], keep_nodes=[gemm])
    for node in model.graph.node:
        if node.op_type == "GlobalAveragePool" or node.name == gemm:
            assert all(t in (TensorProto.FLOAT, None) for t in _input_types(model, node)), node.name
    assert onnx.checker.check_model(model) is None
    assert {i.data_type for i in source.graph.initializer} == {TensorProto.FLOAT}  # the caller's model is untouched


def test_unknown_kept_node_is_an_error(digits_model):
    with pytest.raises(DeployResError, match="no node named 'nope'"):
        convert_fp16(str(digits_model.onnx_path), keep_nodes=["nope"])


def test_default_keep_list_is_a_tuple_of_op_types():
    assert isinstance(DEFAULT_KEEP_OP_TYPES, tuple) and all(isinstance(op, str) for op in DEFAULT_KEEP_OP_TYPES)
