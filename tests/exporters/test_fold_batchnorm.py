"""fold_batchnorm on hand-built graphs: every case the issue names, checked numerically in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graph_builders import apply, bn_params, conv_bn, init, model, node, ops, rng, value
from onnx import helper, numpy_helper

from deploy_res.exporters.passes import fold_batchnorm


@pytest.mark.parametrize("groups", [1, 2, 32, 64], ids=["groups1", "groups2", "groups32", "depthwise"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_conv_bn_folds_exactly(groups, bias, eps):
    result, after, check = apply(conv_bn(groups=groups, bias=bias, eps=eps), fold_batchnorm)
    assert result.changed == 1 and result.skipped == []
    assert ops(after) == ["Conv"]
    conv = node(after, "Conv")
    assert len(conv.input) == 3  # a bias appears when there was none
    assert {a.name: helper.get_attribute_value(a) for a in conv.attribute}["group"] == groups
    assert check["ok"] and check["max_rel_error"] < 1e-5, check


def test_fp16_graph_folds_in_fp16():
    result, after, check = apply(conv_bn(dtype=np.float16, eps=1e-3), fold_batchnorm, rtol=5e-3)
    assert result.changed == 1 and ops(after) == ["Conv"]
    weights = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    assert {w.dtype for w in weights.values()} == {np.dtype(np.float16)}
    assert check["ok"], check


def test_fp16_bn_params_on_fp32_conv():
    """BatchNormalization-15 lets scale/B/mean/var be float16 under float32 activations."""
    result, after, check = apply(conv_bn(param_dtype=np.float16, eps=1e-3), fold_batchnorm)
    assert result.changed == 1 and ops(after) == ["Conv"]
    assert all(numpy_helper.to_array(t).dtype == np.float32 for t in after.graph.initializer)
    assert check["ok"] and check["max_rel_error"] < 1e-5, check


def test_conv_output_with_two_consumers_stays_unfolded():
    result, after, check = apply(conv_bn(second_consumer=True), fold_batchnorm)
    assert result.changed == 0
    assert "BatchNormalization" in ops(after)
    assert len(result.skipped) == 1 and "another consumer" in result.skipped[0]
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_non_constant_parameter_stays_unfolded():
    proto = conv_bn()
    scale = next(t for t in proto.graph.initializer if t.name == "bn.scale")
    proto.graph.initializer.remove(scale)
    proto.graph.input.append(value("bn.scale", [64]))
    result, after, _ = apply(proto, fold_batchnorm)
    assert result.changed == 0 and "BatchNormalization" in ops(after)
    assert "scale is not a constant" in result.skipped[0]


def _linear_bn(op: str, trans_b: int = 0, with_c: bool = True) -> "onnx.ModelProto":
    r = rng(2)
    k, n = 16, 12
    weight = r.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits = [init("B", weight)]
    params, names = bn_params("bn", n)
    if op == "Gemm":
        inputs = ["x", "B"]
        if with_c:
            inits.append(init("C", r.standard_normal(n).astype(np.float32)))
            inputs.append("C")
        first = helper.make_node("Gemm", inputs, ["y"], "gemm", transB=trans_b, alpha=0.5, beta=2.0)
    else:
        first = helper.make_node("MatMul", ["x", "B"], ["y"], "matmul")
    nodes = [first, helper.make_node("BatchNormalization", ["y", *names], ["out"], "bn", epsilon=1e-3)]
    return model(nodes, [value("x", ["batch", k])], [value("out", ["batch", n])], inits + params)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_bn_after_gemm(trans_b, with_c):
    result, after, check = apply(_linear_bn("Gemm", trans_b, with_c), fold_batchnorm)
    assert result.changed == 1 and result.details["gemm"] == 1
    assert ops(after) == ["Gemm"]
    assert check["ok"] and check["max_rel_error"] < 1e-5, check


def test_bn_after_matmul():
    result, after, check = apply(_linear_bn("MatMul"), fold_batchnorm)
    assert result.changed == 1 and result.details["matmul"] == 1
    assert ops(after) == ["MatMul", "Add"]
    assert check["ok"] and check["max_rel_error"] < 1e-5, check


def _matmul_bn_below_dynamic_reshape() -> "onnx.ModelProto":
    """``Relu(BN(MatMul(Reshape(x, [batch, prod(shape) / batch]), W)))``, the target computed from the dynamic batch.

    ONNX shape inference (opset 13) knows the target has 2 elements but gives the Reshape output, the
    MatMul output and the BN no shape at all.
    """
    params, names = bn_params("bn", 16)
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"], "shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch_dim"], "gather", axis=0),
        helper.make_node("Unsqueeze", ["batch_dim", "axes0"], ["batch_1d"], "unsqueeze"),
        helper.make_node("ReduceProd", ["shape"], ["total"], "total", keepdims=1),
        helper.make_node("Div", ["total", "batch_1d"], ["rest"], "rest"),
        helper.make_node("Concat", ["batch_1d", "rest"], ["target"], "target", axis=0),
        helper.make_node("Reshape", ["input", "target"], ["flat"], "reshape"),
        helper.make_node("MatMul", ["flat", "W"], ["mm"], "matmul"),
        helper.make_node("BatchNormalization", ["mm", *names], ["bn_out"], "bn"),
        helper.make_node("Relu", ["bn_out"], ["output"], "relu"),
    ]
    inits = [init("zero", np.array(0, np.int64)), init("axes0", np.array([0], np.int64)),
             init("W", (rng(2).standard_normal((32, 16)) * 0.2).astype(np.float32)), *params]
    return model(nodes, [value("input", ["batch", 8, 2, 2])], [value("output", ["batch", 16])], inits, opset=13)


def test_bn_after_matmul_below_a_dynamic_batch_reshape_derives_the_rank():
    inferred = onnx.shape_inference.infer_shapes(_matmul_bn_below_dynamic_reshape())
    assert not any(vi.name == "mm" and vi.type.tensor_type.HasField("shape") for vi in inferred.graph.value_info)  # the case itself
    result, after, check = apply(_matmul_bn_below_dynamic_reshape(), fold_batchnorm)
    assert result.changed == 1 and result.details["matmul"] == 1, result.skipped
    assert "BatchNormalization" not in ops(after)
    assert check["ok"] and check["max_rel_error"] < 1e-5, check


def test_optimize_cli_folds_bn_below_a_dynamic_batch_reshape(tmp_path):
    from click.testing import CliRunner

    from deploy_res.cli import cli

    source = tmp_path / "mlp.onnx"
    onnx.save(_matmul_bn_below_dynamic_reshape(), str(source))
    result = CliRunner().invoke(cli, ["optimize", str(source), "--target", "portable", "-o", str(tmp_path / "mlp.opt.onnx")])
    assert result.exit_code == 0, result.output
    assert "rank of its input is unknown" not in result.output
    assert "BatchNormalization" not in ops(onnx.load(str(tmp_path / "mlp.opt.onnx")))


def _lone_bn(pads: int | None) -> "onnx.ModelProto":
    """``input -> Relu -> BN [-> Conv(pads)]``: nothing to fold the BN into backwards."""
    params, names = bn_params("bn", 8)
    nodes = [helper.make_node("Relu", ["input"], ["r"], "relu"), helper.make_node("BatchNormalization", ["r", *names], ["bn_out"], "bn", epsilon=1e-3)]
    inits = list(params)
    out = "bn_out"
    if pads is not None:
        inits += [init("W", rng(3).standard_normal((4, 4, 3, 3)).astype(np.float32))]
        nodes.append(helper.make_node("Conv", ["bn_out", "W"], ["conv_out"], "conv", kernel_shape=[3, 3], pads=[pads] * 4, group=2))
        out = "conv_out"
    spatial = 6 if pads is None or pads else 4
    return model(nodes, [value("input", ["batch", 8, 6, 6])], [value(out, ["batch", 8 if pads is None else 4, spatial, spatial])], inits)


def test_lone_bn_becomes_mul_add():
    result, after, check = apply(_lone_bn(None), fold_batchnorm)
    assert result.changed == 1 and result.details["mul_add"] == 1
    assert ops(after) == ["Relu", "Mul", "Add"]
    assert check["ok"] and check["max_rel_error"] < 1e-5, check


def test_lone_bn_folds_into_following_unpadded_conv():
    result, after, check = apply(_lone_bn(0), fold_batchnorm)
    assert result.details["next_conv"] == 1
    assert ops(after) == ["Relu", "Conv"]
    assert check["ok"] and check["max_rel_error"] < 1e-5, check


def test_lone_bn_before_padded_conv_is_not_folded_forward():
    """Folding forward is inexact when the Conv pads: the padding would stand for BN(0) = t, not 0."""
    result, after, check = apply(_lone_bn(1), fold_batchnorm)
    assert result.details["mul_add"] == 1 and result.details["next_conv"] == 0
    assert ops(after) == ["Relu", "Mul", "Add", "Conv"]
    assert check["ok"] and check["max_rel_error"] < 1e-5, check
