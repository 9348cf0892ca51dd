"""Q/DQ emitters: TensorRT placement checked node by node, the checker's own teeth, ORT's U8S8 layout."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy_res.core.errors import DeployResError
from deploy_res.engines.precision.calibration import calibrate
from deploy_res.engines.precision.calibration_cache import Ranges
from deploy_res.engines.precision.qdq import emit_qdq, residual_skips
from deploy_res.engines.precision.qdq_check import check_tensorrt_qdq_placement
from precision_helpers import mean_cosine, run_onnx


@pytest.fixture(scope="module")
def digits_ranges(digits_model):
    return calibrate(digits_model.onnx_path, digits_model.train_x[:32], method="minmax", quiet=True)


@pytest.fixture(scope="module")
def trt_model(digits_model, digits_ranges):
    return emit_qdq(onnx.load(str(digits_model.onnx_path)), digits_ranges, "tensorrt")


def _graph(model):
    graph = gs.import_onnx(model)
    graph.toposort()
    return graph


def _producer_op(tensor):
    return tensor.inputs[0].op if tensor.inputs else None


def test_tensorrt_layout_obeys_the_placement_rules(digits_model, trt_model):
    assert check_tensorrt_qdq_placement(trt_model) == []
    float_ops = Counter(n.op_type for n in onnx.load(str(digits_model.onnx_path)).graph.node)
    graph = _graph(trt_model)
    weighted = [n for n in graph.nodes if n.op in ("Conv", "Gemm")]
    assert len(weighted) == float_ops["Conv"] + float_ops["Gemm"] == 13  # stem, 8 block convs, 3 projections, fc
    for node in weighted:
        assert _producer_op(node.inputs[0]) == "DequantizeLinear" and _producer_op(node.inputs[1]) == "DequantizeLinear"
        weight_dq = node.inputs[1].inputs[0]
        assert weight_dq.inputs[0].values.dtype == np.int8 and weight_dq.attrs["axis"] == 0
        if len(node.inputs) > 2:
            assert isinstance(node.inputs[2], gs.Constant) and node.inputs[2].values.dtype == np.float32  # bias stays float
    adds = [n for n in graph.nodes if n.op == "Add"]
    assert len(adds) == 4 and len(residual_skips(graph)) == 4
    # exactly the three downsample projections have a Q on a conv output: they are the skips of their Adds
    quantised_conv_outputs = [q for q in graph.nodes if q.op == "QuantizeLinear" and _producer_op(q.inputs[0]) == "Conv"]
    assert len(quantised_conv_outputs) == 3
    # nothing on pools, the classifier output or the graph output
    assert not any(_producer_op(q.inputs[0]) in ("Gemm", "GlobalAveragePool", "Add") for q in graph.nodes if q.op == "QuantizeLinear")


def test_tensorrt_scales_are_max_abs_over_127(digits_model, digits_ranges, trt_model):
    graph = _graph(trt_model)
    first_conv = next(n for n in graph.nodes if n.op == "Conv")
    dq = first_conv.inputs[0].inputs[0]
    assert float(dq.inputs[1].values) == pytest.approx(digits_ranges.amax("input") / 127)
    float_weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(digits_model.onnx_path)).graph.initializer}
    wdq = first_conv.inputs[1].inputs[0]
    original = float_weights[wdq.inputs[0].name.removesuffix("_quantized")]
    np.testing.assert_allclose(wdq.inputs[1].values, np.abs(original).reshape(original.shape[0], -1).max(1) / 127, rtol=1e-6)


def _mutate(model, edit):
    graph = _graph(onnx.ModelProto.FromString(model.SerializeToString()))
    edit(graph)
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def _bypass_skip(graph):
    add_name, index = next(iter(residual_skips(graph).items()))
    add = next(n for n in graph.nodes if n.name == add_name)
    dq = add.inputs[index].inputs[0]
    add.inputs[index] = dq.inputs[0].inputs[0].inputs[0]  # DQ <- Q <- float tensor


def _uint8_zero_point(graph):
    q = next(n for n in graph.nodes if n.op == "QuantizeLinear")
    q.inputs[2] = gs.Constant("zp_u8", np.array(0, np.uint8))


def _nonzero_zero_point(graph):
    q = next(n for n in graph.nodes if n.op == "DequantizeLinear" and not isinstance(n.inputs[0], gs.Constant))
    q.inputs[2] = gs.Constant("zp_3", np.array(3, np.int8))


def _per_tensor_weight(graph):
    dq = next(n for n in graph.nodes if n.op == "DequantizeLinear" and isinstance(n.inputs[0], gs.Constant))
    dq.inputs[1] = gs.Constant("w_scale_scalar", np.array(0.01, np.float32))
    dq.inputs[2] = gs.Constant("w_zp_scalar", np.array(0, np.int8))
    dq.attrs.pop("axis", None)


def _wrong_axis(graph):
    dq = next(n for n in graph.nodes if n.op == "DequantizeLinear" and isinstance(n.inputs[0], gs.Constant) and n.inputs[0].values.shape[0] != n.inputs[0].values.shape[1])
    channels = dq.inputs[0].values.shape[1]
    dq.inputs[1] = gs.Constant("s_axis1", np.full(channels, 0.01, np.float32))
    dq.inputs[2] = gs.Constant("z_axis1", np.zeros(channels, np.int8))
    dq.attrs["axis"] = 1


def _qdq_on_conv_output(graph):
    conv = next(n for n in graph.nodes if n.op == "Conv" and n.outputs[0].outputs and n.outputs[0].outputs[0].op == "Relu")
    relu = conv.outputs[0].outputs[0]
    scale, zero = gs.Constant("extra_s", np.array(0.1, np.float32)), gs.Constant("extra_z", np.array(0, np.int8))
    q_out, dq_out = gs.Variable("extra_q", dtype=np.int8), gs.Variable("extra_dq", dtype=np.float32)
    graph.nodes += [gs.Node("QuantizeLinear", "extra_Q", inputs=[conv.outputs[0], scale, zero], outputs=[q_out]),
                    gs.Node("DequantizeLinear", "extra_DQ", inputs=[q_out, scale, zero], outputs=[dq_out])]
    relu.inputs[0] = dq_out


def _drop_data_qdq(graph):
    conv = [n for n in graph.nodes if n.op == "Conv"][1]
    conv.inputs[0] = conv.inputs[0].inputs[0].inputs[0].inputs[0].inputs[0]


@pytest.mark.parametrize(
    "edit, expected",
    [
        (_bypass_skip, "skip input .* does not come through Q/DQ"),
        (_uint8_zero_point, "zero point is uint8"),
        (_nonzero_zero_point, "zero point is not 0"),
        (_per_tensor_weight, "expected per-channel"),
        (_wrong_axis, "axis is 1, expected 0"),
        (_qdq_on_conv_output, "quantises the output of Conv .* without a quantised consumer"),
        (_drop_data_qdq, "data input .* does not come from DequantizeLinear"),
    ],
)
def test_the_checker_catches_each_broken_rule(trt_model, edit, expected):
    problems = check_tensorrt_qdq_placement(_mutate(trt_model, edit))
    assert problems, "the broken model passed the check"
    assert any(__import__("re").search(expected, line) for line in problems), problems


def test_the_onnxruntime_layout_is_u8s8_per_channel_and_fails_the_tensorrt_check(digits_model, digits_ranges):
    model = emit_qdq(str(digits_model.onnx_path), digits_ranges, "onnxruntime")
    graph = _graph(model)
    for conv in (n for n in graph.nodes if n.op == "Conv"):
        data_dq, weight_dq = conv.inputs[0].inputs[0], conv.inputs[1].inputs[0]
        assert data_dq.inputs[2].values.dtype == np.uint8  # asymmetric uint8 activations
        assert weight_dq.inputs[0].values.dtype == np.int8 and weight_dq.inputs[1].values.size == weight_dq.inputs[0].values.shape[0]
    problems = check_tensorrt_qdq_placement(model)
    assert any("zero point is uint8" in line for line in problems)


def _toy_model(trans_b: int, scaled_residual: bool, swap_add: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["a"], name="relu1"),
        helper.make_node("Conv", ["a", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    branch = "c2"
    if scaled_residual:
        nodes.append(helper.make_node("Mul", ["c2", "scale"], ["c2s"], name="scale"))
        branch = "c2s"
    nodes += [
        helper.make_node("Add", ["a", branch] if swap_add else [branch, "a"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=trans_b, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(fc, "fc")]
        + ([numpy_helper.from_array(np.array(0.17, np.float32), "scale")] if scaled_residual else []),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # readable by older ORT too


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("scaled_residual, swap_add", [(False, False), (True, False), (False, True)])
def test_toy_graphs_gemm_axis_and_skip_choice(tmp_path, trans_b, scaled_residual, swap_add):
    model = _toy_model(trans_b, scaled_residual, swap_add)
    path = tmp_path / "toy.onnx"
    onnx.save(model, str(path))
    data = np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32)
    ranges = calibrate(path, data, method="minmax", quiet=True)
    qdq = emit_qdq(model, ranges, "tensorrt")
    assert check_tensorrt_qdq_placement(qdq) == []
    graph = _graph(qdq)
    gemm = next(n for n in graph.nodes if n.op == "Gemm")
    weight_dq = gemm.inputs[1].inputs[0]
    assert weight_dq.attrs["axis"] == (0 if trans_b else 1) and weight_dq.inputs[1].values.size == 5
    add = next(n for n in graph.nodes if n.op == "Add")
    skip = add.inputs[0 if swap_add else 1]
    assert skip.inputs[0].op == "DequantizeLinear" and skip.inputs[0].inputs[0].inputs[0].inputs[0].name == "a"
    branch = add.inputs[1 if swap_add else 0]
    assert branch.inputs[0].op == ("Mul" if scaled_residual else "Conv")  # the branch stays float into the Add
    assert mean_cosine(run_onnx(qdq, data), run_onnx(model, data)) > 0.98  # random toy weights: a sanity bound


def test_bad_emit_requests_fail_in_one_line(digits_model, digits_ranges):
    model = onnx.load(str(digits_model.onnx_path))
    with pytest.raises(DeployResError, match="unknown Q/DQ layout"):
        emit_qdq(model, digits_ranges, "tflite")
    with pytest.raises(DeployResError, match="lack .* tensors"):
        emit_qdq(model, Ranges("minmax", {}, {"input": (-1.0, 1.0)}), "tensorrt")
    with pytest.raises(DeployResError, match="none of this model's tensors"):
        emit_qdq(model, Ranges("minmax", {}, {"elsewhere": (-1.0, 1.0)}), "onnxruntime")


def test_onnxruntime_emitter_works_without_quantize_statics_cache_parameter(digits_model, digits_ranges, monkeypatch):
    """ORT releases before 1.32 have no ``calibration_cache_path``: the stand-in calibrator gives the same model."""
    import onnxruntime.quantization as quantization

    model = onnx.load(str(digits_model.onnx_path))
    expected = emit_qdq(model, digits_ranges, "onnxruntime")
    real = quantization.quantize_static

    def old_signature(model_input, model_output, calibration_data_reader=None, quant_format=None, op_types_to_quantize=None,
                      per_channel=False, reduce_range=False, activation_type=None, weight_type=None, nodes_to_quantize=None,
                      nodes_to_exclude=None, use_external_data_format=False, calibrate_method=None, calibration_providers=None,
                      extra_options=None):
        return real(model_input, model_output, calibration_data_reader, quant_format, op_types_to_quantize, per_channel,
                    reduce_range, activation_type, weight_type, nodes_to_quantize, nodes_to_exclude, use_external_data_format,
                    calibrate_method, calibration_providers, extra_options)

    monkeypatch.setattr(quantization, "quantize_static", old_signature)
    assert emit_qdq(model, digits_ranges, "onnxruntime").SerializeToString() == expected.SerializeToString()


def test_onnxruntime_emitter_quantises_biases_shared_through_identity(tmp_path):
    """The TorchScript exporter shares equal biases through Identity nodes; they must still be quantised."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Identity", ["zeros"], ["bias_a"], name="id_a"),
        helper.make_node("Identity", ["zeros"], ["bias_b"], name="id_b"),
        helper.make_node("Conv", ["x", "w1", "bias_a"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "bias_b"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "shared_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
         numpy_helper.from_array(np.zeros(4, np.float32), "zeros")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "shared_bias.onnx"
    onnx.save(model, str(path))
    ranges = calibrate(path, rng.standard_normal((4, 3, 8, 8)).astype(np.float32), method="minmax", quiet=True)
    qdq = emit_qdq(model, ranges, "onnxruntime")
    producers = {out: node.op_type for node in qdq.graph.node for out in node.output}
    assert [producers.get(n.input[2]) for n in qdq.graph.node if n.op_type == "Conv"] == ["DequantizeLinear"] * 2


@pytest.mark.parametrize("isa, fix", [
    (["avx", "avx2", "fma", "sse4_2"], "first_layer"),  # AVX2 EPYC: VPMADDUBSW's 16-bit pair sums
    (["avx2", "avx512f", "avx512bw"], "first_layer"),  # AVX-512 without VNNI saturates the same way
    (["avx2", "avx512f", "avx512_vnni"], "none"),
    (["avx2", "avx_vnni"], "none"),
    (["avx2", "avx512f", "amx_int8", "amx_tile"], "none"),
    (["asimd"], "none"),  # not x86
])
def test_the_overflow_fix_follows_the_cpus_int8_dot_product(isa, fix):
    from deploy_res.engines.precision.qdq import overflow_fix_for

    assert overflow_fix_for(isa) == fix


def test_the_first_layer_fix_keeps_only_the_image_fed_weights_at_7_bits(digits_model, digits_ranges):
    float_model = onnx.load(str(digits_model.onnx_path))
    plain = emit_qdq(float_model, digits_ranges, "onnxruntime")
    fixed = emit_qdq(float_model, digits_ranges, "onnxruntime", overflow_fix="first_layer")
    graph = _graph(fixed)
    inputs = {t.name for t in graph.inputs}
    convs = [n for n in graph.nodes if n.op == "Conv"]
    first = [c.name for c in convs if c.inputs[0].inputs[0].inputs[0].inputs[0].inputs[0].name in inputs]  # Conv <- DQ <- Q <- graph input
    assert len(first) == 1 and len(convs) > 1
    for conv in convs:
        weight_dq = conv.inputs[1].inputs[0]
        q, scale = weight_dq.inputs[0].values, weight_dq.inputs[1].values
        float_weight = numpy_helper.to_array(next(i for i in float_model.graph.initializer
                                                  if i.name == next(n for n in float_model.graph.node if n.name == conv.name).input[1]))
        per_channel = np.abs(float_weight.reshape(len(float_weight), -1)).max(1)
        limit = 64 if conv.name in first else 127
        assert np.abs(q).max() == limit and np.allclose(scale, per_channel / limit, rtol=1e-6)
        if len(conv.inputs) > 2:  # the int32 bias follows its input x weight scale
            bias_dq, data_scale = conv.inputs[2].inputs[0], conv.inputs[0].inputs[0].inputs[1].values
            assert np.allclose(bias_dq.inputs[1].values, data_scale * scale, rtol=1e-6)
    x = digits_model.test_x[:64]
    reference = run_onnx(float_model, x)
    # the same network: 7 bits in one layer costs little against the float graph (Q/DQ run exactly, no integer kernels)
    assert mean_cosine(run_onnx(fixed, x, exact=True), reference) > mean_cosine(run_onnx(plain, x, exact=True), reference) - 0.002
    with pytest.raises(DeployResError, match="overflow fix"):
        emit_qdq(float_model, digits_ranges, "tensorrt", overflow_fix="first_layer")


def test_seven_bit_weights_in_every_layer_is_reduce_range(digits_model, digits_ranges):
    from deploy_res.engines.precision.qdq import seven_bit_weights

    float_model = onnx.load(str(digits_model.onnx_path))
    every = seven_bit_weights(emit_qdq(float_model, digits_ranges, "onnxruntime"), float_model, layers="all")
    weights = [n.inputs[1].inputs[0].inputs[0].values for n in _graph(every).nodes if n.op in ("Conv", "Gemm")]
    assert len(weights) > 2 and all(np.abs(q).max() == 64 for q in weights)
    with pytest.raises(DeployResError, match="'first' or 'all'"):
        seven_bit_weights(every, float_model, layers="last")
