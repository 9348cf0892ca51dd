"""Residual passes on hand-built blocks: scale folding, FusedConv for ONNX Runtime, the TensorRT form and list."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graph_builders import apply, init, model, node, ops, rng, value
from onnx import helper

from deploy_res.exporters.passes import find_residual_adds, fold_residual_scale, fuse_residual_ort, prepare_residual_tensorrt

C = 8
SHAPE = ["batch", C, 6, 6]


def _conv(name: str, x: str, out: str, bias: bool = True, seed: int = 0) -> tuple[onnx.NodeProto, list]:
    r = rng(seed)
    inits = [init(f"{name}.W", (r.standard_normal((C, C, 3, 3)) * 0.2).astype(np.float32))]
    inputs = [x, f"{name}.W"]
    if bias:
        inits.append(init(f"{name}.b", r.uniform(-1, 1, C).astype(np.float32)))
        inputs.append(f"{name}.b")
    return helper.make_node("Conv", inputs, [out], name, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), inits


def _block(bias: bool = True, relu: bool = True, projection: bool = False, conv_also_output: bool = False, between=None) -> onnx.ModelProto:
    """``relu(conv(x) + skip)`` with skip = x or (projection) conv'(x); ``between`` ops go between Conv/Add/Relu."""
    conv, inits = _conv("branch", "input", "branch_out", bias)
    nodes = [conv]
    branch = "branch_out"
    for op in between or []:
        nodes.append(helper.make_node(op, [branch], [f"{branch}_{op}"], f"before_add_{op}"))
        branch = f"{branch}_{op}"
    skip = "input"
    if projection:
        proj, more = _conv("proj", "input", "proj_out", True, seed=1)
        nodes.append(proj)
        inits += more
        skip = "proj_out"
    nodes.append(helper.make_node("Add", [branch, skip], ["sum"], "add"))
    out = "sum"
    for op in between or []:
        nodes.append(helper.make_node(op, [out], [f"{out}_{op}"], f"after_add_{op}"))
        out = f"{out}_{op}"
    if relu:
        nodes.append(helper.make_node("Relu", [out], ["output"], "relu"))
        out = "output"
    outputs = [value(out, SHAPE)] + ([value("branch_out", SHAPE)] if conv_also_output else [])
    return model(nodes, [value("input", SHAPE)], outputs, inits)


def _attrs(proto_node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in proto_node.attribute}


# ------------------------------------------------------------ fold_residual_scale


@pytest.mark.parametrize("scale", [np.float32(0.17), np.full((1, C, 1, 1), 0.2, np.float32) * np.arange(1, C + 1, dtype=np.float32).reshape(1, C, 1, 1)], ids=["scalar", "per_channel"])
@pytest.mark.parametrize("bias", [True, False])
def test_scaled_residual_folds_into_branch_conv(scale, bias):
    """Inception-ResNet: ``relu(x + scale * conv(x))`` -> ``relu(x + conv'(x))``."""
    conv, inits = _conv("branch", "input", "branch_out", bias)
    nodes = [
        conv,
        helper.make_node("Mul", ["branch_out", "scale"], ["scaled"], "mul"),
        helper.make_node("Add", ["input", "scaled"], ["sum"], "add"),
        helper.make_node("Relu", ["sum"], ["output"], "relu"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)], inits + [init("scale", scale)])
    result, after, check = apply(proto, fold_residual_scale)
    assert result.changed == 1 and result.details["residual"] == 1
    assert ops(after) == ["Conv", "Add", "Relu"]
    assert check["ok"] and check["max_rel_error"] < 1e-6, check


def test_scale_that_is_not_per_channel_is_left():
    conv, inits = _conv("branch", "input", "branch_out")
    nodes = [conv, helper.make_node("Mul", ["branch_out", "scale"], ["output"], "mul")]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)], inits + [init("scale", np.ones((1, 1, 6, 6), np.float32))])
    result, after, _ = apply(proto, fold_residual_scale)
    assert result.changed == 0 and "not a scalar or per-output-channel" in result.skipped[0]
    assert ops(after) == ["Conv", "Mul"]


def _conv_times_rank5_scalar() -> onnx.ModelProto:
    """``Conv(x) * c`` with a size-1 ``c`` of shape (1,1,1,1,1): the product is rank 5, the Conv output rank 4."""
    conv, inits = _conv("branch", "input", "branch_out")
    nodes = [conv, helper.make_node("Mul", ["branch_out", "scale"], ["output"], "mul")]
    return model(nodes, [value("input", SHAPE)], [value("output", [1, "batch", C, 6, 6])], inits + [init("scale", np.full((1, 1, 1, 1, 1), 0.5, np.float32))])


def test_size_one_scale_of_higher_rank_than_the_conv_is_left():
    result, after, check = apply(_conv_times_rank5_scalar(), fold_residual_scale)
    assert result.changed == 0 and "not a scalar or per-output-channel" in result.skipped[0]
    assert ops(after) == ["Conv", "Mul"] and check["ok"]


def test_optimize_cli_keeps_a_valid_model_with_a_higher_rank_scale(tmp_path):
    from click.testing import CliRunner

    from deploy_res.cli import cli

    source = tmp_path / "rank5.onnx"
    onnx.save(_conv_times_rank5_scalar(), str(source))
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(tmp_path / "rank5.opt.onnx")])
    assert result.exit_code == 0, result.output
    assert "Mul" in ops(onnx.load(str(tmp_path / "rank5.opt.onnx")))


# ------------------------------------------------------------ fuse_residual_ort


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [True, False])
def test_conv_add_relu_becomes_fused_conv(bias, relu):
    result, after, check = apply(_block(bias=bias, relu=relu), fuse_residual_ort)
    assert result.changed == 1
    assert ops(after) == ["FusedConv"]
    fused = node(after, "FusedConv")
    assert fused.domain == "com.microsoft"
    assert list(fused.input)[3] == "input"  # the skip is Z
    assert fused.input[2]  # a (zero) bias is always present
    assert result.details["bias_added"] == (0 if bias else 1)
    attrs = _attrs(fused)
    assert attrs.get("activation") == (b"Relu" if relu else None)
    assert attrs["kernel_shape"] == [3, 3] and attrs["pads"] == [1, 1, 1, 1]
    assert {o.domain: o.version for o in after.opset_import}.get("com.microsoft") == 1
    assert check["ok"] and check["max_rel_error"] < 1e-6, check


def test_projection_block_fuses_the_main_branch():
    result, after, check = apply(_block(projection=True), fuse_residual_ort)
    assert result.changed == 1 and sorted(ops(after)) == ["Conv", "FusedConv"]
    fused = node(after, "FusedConv")
    assert fused.input[0] == "input" and fused.input[1] == "branch.W" and fused.input[3] == "proj_out"
    assert check["ok"], check


def test_conv_output_read_elsewhere_is_not_fused():
    result, after, _ = apply(_block(conv_also_output=True), fuse_residual_ort)
    assert result.changed == 0 and "FusedConv" not in ops(after)
    assert "other readers" in result.skipped[0]


def test_broadcasting_add_is_not_fused():
    conv, inits = _conv("branch", "input", "branch_out")
    nodes = [conv, helper.make_node("Add", ["branch_out", "shift"], ["output"], "add")]
    proto = model(nodes, [value("input", SHAPE), value("shift", ["batch", C, 1, 1])], [value("output", SHAPE)], inits)
    result, after, _ = apply(proto, fuse_residual_ort)
    assert result.changed == 0 and ops(after) == ["Conv", "Add"]
    assert "not known to equal" in result.skipped[0]


# ------------------------------------------------------------ tensorrt


def test_tensorrt_makes_conv_add_relu_contiguous_and_lists_the_add():
    proto = _block(between=["Identity", "Dropout"])
    result, after, check = apply(proto, prepare_residual_tensorrt)
    assert ops(after) == ["Conv", "Add", "Relu"]
    assert result.changed == 4
    assert all(n.domain in ("", "ai.onnx") for n in after.graph.node)
    [entry] = result.details["residual_adds"]
    assert entry == {
        "name": "add",
        "output": "sum",
        "skip_input": "input",
        "conv_input": "branch_out",
        "conv": "branch",
        "branch_input": "branch_out",
        "relu": "relu",
    }
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_tensorrt_leaves_a_real_cast_and_says_so():
    conv, inits = _conv("branch", "input", "branch_out")
    nodes = [
        conv,
        helper.make_node("Cast", ["branch_out"], ["half"], "to_half", to=onnx.TensorProto.FLOAT16),
        helper.make_node("Cast", ["half"], ["back"], "to_float", to=onnx.TensorProto.FLOAT),
        helper.make_node("Cast", ["back"], ["same"], "noop_cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Add", ["same", "input"], ["sum"], "add"),
        helper.make_node("Relu", ["sum"], ["output"], "relu"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)], inits)
    result, after, check = apply(proto, prepare_residual_tensorrt)
    assert ops(after) == ["Conv", "Cast", "Cast", "Add", "Relu"]  # the same-type Cast went, the real ones stay
    assert any("not a no-op" in reason for reason in result.skipped)
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_residual_list_for_projection_block_names_the_shortcut_as_skip():
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(_block(projection=True)))
    [entry] = find_residual_adds(graph.toposort())
    assert entry["conv_input"] == "branch_out" and entry["skip_input"] == "proj_out"
