"""Foreign ONNX files: shape arithmetic, duplicate nodes, Transpose pairs, no-op Casts, Pads and affine ops around Convs.

Every step on a hand-built graph, with its guards, then a tf2onnx-looking
ResNet (tests/support/foreign_models.py) through every target, compared
with onnxslim: deployres' graph is never bigger and computes the same.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from foreign_models import foreign_resnet
from graph_builders import apply, init, model, node, ops, rng, value
from onnx import TensorProto, helper

import deploy_res.exporters.pass_runner as runner
from deploy_res.core.errors import ValidationFailed
from deploy_res.exporters.checks import compare_outputs, make_inputs, run_ort
from deploy_res.exporters.pass_runner import optimize
from deploy_res.exporters.passes import PassResult, cleanup, fold_into_conv

SHAPE = ["batch", 4, 6, 6]
I64 = np.int64


def _const(name, values):
    return helper.make_node("Constant", [], [name], name, value=onnx.numpy_helper.from_array(np.asarray(values)))


# ---------------------------------------------------------------- shape arithmetic


def test_runtime_padding_folds_once_shapes_are_known_with_a_dynamic_batch():
    """Shape -> Gather -> Sub/Div/Max -> Concat -> Pad: constant since H and W are static; two rounds (the Pad's output
    shape is only known after its amounts fold, and a second Pad's amounts come from that shape)."""
    nodes = [
        helper.make_node("Shape", ["input"], ["s"], "shape"),
        _const("hw_idx", np.array([2, 3], I64)),
        helper.make_node("Gather", ["s", "hw_idx"], ["hw"], "gather", axis=0),
        _const("seven", np.array([7, 7], I64)),
        helper.make_node("Sub", ["seven", "hw"], ["total"], "sub"),  # 1 each
        _const("zero2", np.array([0, 0], I64)),
        helper.make_node("Max", ["total", "zero2"], ["total_pos"], "max"),
        _const("two", np.array([2], I64)),
        helper.make_node("Div", ["total_pos", "two"], ["before"], "div"),
        helper.make_node("Sub", ["total_pos", "before"], ["after"], "sub2"),
        helper.make_node("Concat", ["zero2", "before", "zero2", "after"], ["pads"], "concat", axis=0),
        helper.make_node("Pad", ["input", "pads"], ["padded"], "pad"),
        # The second Pad is sized from the first one's output, unknown to the first shape inference.
        helper.make_node("Shape", ["padded"], ["s2"], "shape2", start=2, end=3),
        _const("nine", np.array([9], I64)),
        helper.make_node("Sub", ["nine", "s2"], ["extra"], "sub3"),
        _const("zero7", np.zeros(7, I64)),
        helper.make_node("Concat", ["zero7", "extra"], ["pads2"], "concat2", axis=0),
        helper.make_node("Pad", ["padded", "pads2"], ["output"], "pad2"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", ["batch", 4, 7, 9])])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Pad", "Pad"], ops(after)
    assert result.details["shapes_folded"] >= 2
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_shape_slice_of_static_dims_folds():
    nodes = [
        helper.make_node("Shape", ["input"], ["s"], "shape"),
        _const("starts", np.array([1], I64)),
        _const("ends", np.array([3], I64)),
        helper.make_node("Slice", ["s", "starts", "ends"], ["ch_h"], "slice"),
        _const("minus1", np.array([-1], I64)),
        helper.make_node("Concat", ["minus1", "ch_h"], ["target"], "concat", axis=0),
        helper.make_node("Reshape", ["input", "target"], ["output"], "reshape"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", ["n", 4, 6])])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Reshape"]
    assert check["ok"] and check["max_abs_error"] == 0.0


def _flatten(batch_from: str, unsqueeze: bool):
    """Reshape(x, Concat(Shape(<batch_from>)[0], Shape(x)[1] * 36)): a flatten that keeps the dynamic batch."""
    gather_idx = np.array(0, I64) if unsqueeze else np.array([0], I64)
    nodes = [
        helper.make_node("Shape", [batch_from], ["s"], "shape"),
        _const("i0", gather_idx),
        helper.make_node("Gather", ["s", "i0"], ["n"], "gather_n", axis=0),
        helper.make_node("Shape", ["input"], ["s_in"], "shape_in"),
        _const("i1", np.array([1], I64)),
        helper.make_node("Gather", ["s_in", "i1"], ["c"], "gather_c", axis=0),
        _const("hw", np.array([36], I64)),
        helper.make_node("Mul", ["c", "hw"], ["chw"], "mul"),
    ]
    if unsqueeze:
        nodes += [_const("ax", np.array([0], I64)), helper.make_node("Unsqueeze", ["n", "ax"], ["n1"], "unsqueeze")]
    nodes += [
        helper.make_node("Concat", ["n1" if unsqueeze else "n", "chw"], ["target"], "concat", axis=0),
        helper.make_node("Reshape", ["input", "target"], ["output"], "reshape"),
    ]
    return nodes


@pytest.mark.parametrize("unsqueeze", [False, True])
def test_flatten_with_dynamic_batch_reads_a_constant_target(unsqueeze):
    proto = model(_flatten("input", unsqueeze), [value("input", SHAPE)], [value("output", ["batch", 144])])
    result, after, check = apply(proto, cleanup, batch=3)
    assert ops(after) == ["Reshape"]
    target = next(t for t in after.graph.initializer if t.name == node(after, "Reshape").input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, 144]  # 0: copy the input's (dynamic) batch
    assert result.details["reshape_dims_copied"] == 1
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_flatten_whose_batch_is_a_slice_of_a_shape_with_start():
    """``Slice(Shape(x, start=0, end=2), 0, 1)``: the batch, read through a Shape with start/end and a Slice."""
    nodes = [
        helper.make_node("Shape", ["input"], ["s"], "shape", start=0, end=2),
        _const("b0", np.array([0], I64)),
        _const("b1", np.array([1], I64)),
        helper.make_node("Slice", ["s", "b0", "b1"], ["n"], "slice"),
        _const("rest", np.array([-1], I64)),
        helper.make_node("Concat", ["n", "rest"], ["target"], "concat", axis=0),
        helper.make_node("Reshape", ["input", "target"], ["output"], "reshape"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", ["batch", 144])])
    result, after, check = apply(proto, cleanup, batch=3)
    assert ops(after) == ["Reshape"]
    target = next(t for t in after.graph.initializer if t.name == node(after, "Reshape").input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, -1]
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_flatten_whose_batch_comes_from_another_tensor_is_kept():
    """The batch size read from another input is not known to equal the Reshape input's: the arithmetic stays."""
    proto = model(_flatten("other", False), [value("input", SHAPE), value("other", ["m", 4, 6, 6])], [value("output", ["m", 144])])
    result, after, check = apply(proto, cleanup)
    assert "Concat" in ops(after) and "Shape" in ops(after)
    assert any("shape arithmetic kept" in reason for reason in result.skipped)
    assert check["ok"]


def test_flatten_with_allowzero_is_kept():
    nodes = _flatten("input", False)
    nodes[-1] = helper.make_node("Reshape", ["input", "target"], ["output"], "reshape", allowzero=1)
    proto = model(nodes, [value("input", SHAPE)], [value("output", ["batch", 144])], opset=18)
    result, after, check = apply(proto, cleanup)
    assert "Concat" in ops(after)
    assert any("allowzero=1" in reason for reason in result.skipped)
    assert check["ok"]


# ---------------------------------------------------------------- duplicates, Transposes, Casts


def test_duplicate_nodes_are_computed_once():
    nodes = [
        helper.make_node("Transpose", ["input"], ["t1"], "t1", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["input"], ["t2"], "t2", perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["t1"], ["r1"], "r1"),
        helper.make_node("Relu", ["t2"], ["r2"], "r2"),  # a duplicate once t2 is t1
        helper.make_node("Transpose", ["input"], ["t3"], "t3", perm=[0, 3, 2, 1]),  # other attributes: kept
        helper.make_node("Transpose", ["t3"], ["t3b"], "t3b", perm=[0, 3, 2, 1]),
        helper.make_node("Add", ["r1", "r2"], ["sum"], "add"),
        helper.make_node("Transpose", ["sum"], ["back"], "back", perm=[0, 3, 1, 2]),
        helper.make_node("Add", ["back", "t3b"], ["output"], "add2"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)])
    result, after, check = apply(proto, cleanup)
    counts = Counter(ops(after))
    assert counts["Relu"] == 1 and result.details["duplicate_nodes"] == 2
    assert counts["Transpose"] == 2  # t1 and back stay (a Relu and an Add between them); t3 -> t3b cancel
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_duplicate_writing_a_graph_output_is_kept():
    nodes = [helper.make_node("Relu", ["input"], ["output"], "r1"), helper.make_node("Relu", ["input"], ["side"], "r2")]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE), value("side", SHAPE)])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Relu", "Relu"]
    assert any("graph output" in reason for reason in result.skipped)


def test_random_ops_are_never_merged():
    nodes = [
        helper.make_node("RandomUniformLike", ["input"], ["a"], "rand1", seed=1.0),
        helper.make_node("RandomUniformLike", ["input"], ["b"], "rand2", seed=1.0),
        helper.make_node("Add", ["a", "b"], ["output"], "add"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)])
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(proto))
    cleanup(graph)
    assert Counter(n.op for n in graph.nodes)["RandomUniformLike"] == 2


@pytest.mark.parametrize(
    "perms, left",
    [
        (([0, 2, 3, 1], [0, 3, 1, 2]), 0),  # NCHW -> NHWC -> NCHW: cancel
        (([0, 2, 3, 1], [0, 2, 1, 3]), 1),  # compose into one
        (([0, 2, 3, 1], [0, 2, 1, 3], [0, 3, 2, 1]), 0),  # three that compose to the identity
        (([0, 1, 2, 3],), 0),  # an identity Transpose alone
    ],
)
def test_transpose_chains_merge_or_cancel(perms, left):
    nodes, x = [], "input"
    for index, perm in enumerate(perms):
        nodes.append(helper.make_node("Transpose", [x], [f"t{index}"], f"t{index}", perm=list(perm)))
        x = f"t{index}"
    nodes.append(helper.make_node("Relu", [x], ["output"], "relu"))
    shape = [2, 3, 4, 5]
    for perm in perms:
        shape = [shape[axis] for axis in perm]
    proto = model(nodes, [value("input", [2, 3, 4, 5])], [value("output", shape)])
    result, after, check = apply(proto, cleanup, batch=2)
    assert Counter(ops(after))["Transpose"] == left
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_cancelling_transposes_into_a_graph_output_keep_its_name():
    nodes = [
        helper.make_node("Relu", ["input"], ["r"], "relu"),
        helper.make_node("Transpose", ["r"], ["t"], "t", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["t"], ["output"], "back", perm=[0, 3, 1, 2]),
    ]
    result, after, check = apply(model(nodes, [value("input", SHAPE)], [value("output", SHAPE)]), cleanup)
    assert ops(after) == ["Relu"] and list(node(after, "Relu").output) == ["output"]
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_noop_casts_go_and_real_ones_stay():
    nodes = [
        helper.make_node("Cast", ["input"], ["a"], "noop1", to=TensorProto.FLOAT),
        helper.make_node("Shape", ["a"], ["s"], "shape"),
        helper.make_node("Cast", ["s"], ["s64"], "noop_int", to=TensorProto.INT64),
        helper.make_node("Cast", ["a"], ["h"], "to_half", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["f"], "back", to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["f", "s64"], ["output"], "reshape"),
    ]
    result, after, check = apply(model(nodes, [value("input", SHAPE)], [value("output", SHAPE)]), cleanup)
    assert Counter(ops(after))["Cast"] == 2  # float16 and back round: not a no-op
    assert result.details["noops_removed"] == 2  # float -> float, int64 -> int64 (the Shape stays: the batch is dynamic)
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_cast_round_trip_through_a_wider_type_goes_and_a_narrower_one_stays():
    nodes = [
        helper.make_node("Cast", ["input"], ["d"], "to_double", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["d"], ["f"], "back", to=TensorProto.FLOAT),  # exact: a no-op pair
        helper.make_node("Cast", ["f"], ["h"], "to_half", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["output"], "from_half", to=TensorProto.FLOAT),  # rounds: stays
    ]
    result, after, check = apply(model(nodes, [value("input", SHAPE)], [value("output", SHAPE)]), cleanup)
    assert ops(after) == ["Cast", "Cast"] and [n.name for n in after.graph.node] == ["to_half", "from_half"]
    assert result.details["casts_merged"] >= 1
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_reshape_pairs_merge_unless_the_second_copies_a_dim():
    nodes = [
        _const("s1", np.array([0, 4, 36], I64)),
        helper.make_node("Reshape", ["input", "s1"], ["r1"], "r1"),
        _const("s2", np.array([-1, 144], I64)),
        helper.make_node("Reshape", ["r1", "s2"], ["r2"], "r2"),
        _const("s3", np.array([0, 12, 12], I64)),
        helper.make_node("Reshape", ["r2", "s3"], ["output"], "r3"),  # its 0 copies r2's dim: kept on r2
    ]
    result, after, check = apply(model(nodes, [value("input", SHAPE)], [value("output", ["batch", 12, 12])]), cleanup)
    assert ops(after) == ["Reshape", "Reshape"] and node(after, "Reshape").input[0] == "input"
    assert any("copies a dimension" in reason for reason in result.skipped)
    assert check["ok"] and check["max_abs_error"] == 0.0


# ---------------------------------------------------------------- fold_into_conv


def _conv(x="x", out="conv_out", bias=True, pads=None, groups=1, channels=4):
    r = rng(3)
    inits = [init("W", (r.standard_normal((channels, channels // groups, 3, 3)) * 0.3).astype(np.float32))]
    inputs = [x, "W"]
    if bias:
        inits.append(init("b", r.uniform(-1, 1, channels).astype(np.float32)))
        inputs.append("b")
    attrs = {"kernel_shape": [3, 3], "group": groups}
    if pads is not None:
        attrs["pads"] = pads
    return helper.make_node("Conv", inputs, [out], "conv", **attrs), inits


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_sub_mul_add_batchnorm_folds_into_the_conv(bias, groups):
    conv, inits = _conv(bias=bias, groups=groups, pads=[1, 1, 1, 1])
    r = rng(4)
    inits += [init("mean", r.uniform(-1, 1, (4, 1, 1)).astype(np.float32)), init("scale", r.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32)), init("shift", np.float32(0.25))]
    nodes = [
        conv,
        helper.make_node("Sub", ["conv_out", "mean"], ["a"], "sub"),
        helper.make_node("Mul", ["scale", "a"], ["b2"], "mul"),  # the constant first
        helper.make_node("Div", ["b2", "scale"], ["c"], "div"),
        helper.make_node("Add", ["c", "shift"], ["output"], "add"),
    ]
    proto = model(nodes, [value("x", SHAPE)], [value("output", SHAPE)], inits)
    result, after, check = apply(proto, fold_into_conv)
    assert ops(after) == ["Conv"] and list(node(after, "Conv").output) == ["output"]
    assert result.details["affine"] == 4 and not result.skipped
    assert check["ok"], check


def test_constant_minus_conv_folds_and_constant_over_conv_does_not():
    conv, inits = _conv()
    inits += [init("c", np.full((4, 1, 1), 2.0, np.float32))]
    nodes = [conv, helper.make_node("Sub", ["c", "conv_out"], ["a"], "rsub"), helper.make_node("Div", ["c", "a"], ["output"], "rdiv")]
    proto = model(nodes, [value("x", SHAPE)], [value("output", ["batch", 4, 4, 4])], inits)
    result, after, check = apply(proto, fold_into_conv)
    assert ops(after) == ["Conv", "Div"]
    assert any("not affine" in reason for reason in result.skipped)
    assert check["ok"], check


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize(
    "operand, reason",
    [
        (np.ones((1, 1, 4, 4), np.float32), "not a scalar or per-output-channel"),  # broadcasts along space
        (np.ones((1, 1, 4, 1, 1), np.float32), "not a scalar or per-output-channel"),  # higher rank than the Conv output
        (np.zeros((4, 1, 1), np.float32), "zeros or non-finite"),  # a Div by 0
    ],
)
def test_affine_guards(operand, reason):
    conv, inits = _conv()
    inits.append(init("c", operand))
    op = "Div" if not operand.any() else "Mul"
    out_shape = ["batch", 1, 4, 4, 4] if operand.ndim == 5 else ["batch", 4, 4, 4]
    proto = model([conv, helper.make_node(op, ["conv_out", "c"], ["output"], "op")], [value("x", SHAPE)], [value("output", out_shape)], inits)
    result, after, check = apply(proto, fold_into_conv)
    assert ops(after) == ["Conv", op]
    assert any(reason in r for r in result.skipped), result.skipped
    assert check["ok"] or op == "Div"  # x / 0: inf and NaN on both sides


def test_conv_output_with_another_reader_is_not_folded():
    conv, inits = _conv()
    inits.append(init("c", np.full((4, 1, 1), 3.0, np.float32)))
    nodes = [conv, helper.make_node("Mul", ["conv_out", "c"], ["output"], "mul"), helper.make_node("Relu", ["conv_out"], ["side"], "relu")]
    proto = model(nodes, [value("x", SHAPE)], [value("output", ["batch", 4, 4, 4]), value("side", ["batch", 4, 4, 4])], inits)
    result, after, check = apply(proto, fold_into_conv)
    assert Counter(ops(after))["Mul"] == 1 and result.changed == 0


def _padded(pads, mode="constant", fill=None):
    conv, inits = _conv(x="padded", pads=[1, 0, 0, 1])
    inits.append(init("pads", np.array(pads, I64)))
    pad_inputs = ["x", "pads"]
    if fill is not None:
        inits.append(init("fill", np.array(fill, np.float32)))
        pad_inputs.append("fill")
    nodes = [helper.make_node("Pad", pad_inputs, ["padded"], "pad", mode=mode), conv]
    h = 6 + pads[2] + pads[6] + 1 - 2
    w = 6 + pads[3] + pads[7] + 1 - 2
    c = 4 + pads[1] + pads[5]
    return model(nodes, [value("x", SHAPE)], [value("conv_out", ["batch", 4, h, w] if c == 4 else ["batch", 4, None, None])], inits)


def test_zero_pad_folds_into_conv_pads():
    proto = _padded([0, 0, 2, 1, 0, 0, 0, 3])
    result, after, check = apply(proto, fold_into_conv)
    assert ops(after) == ["Conv"]
    conv = node(after, "Conv")
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads")) == [3, 1, 0, 4]
    assert result.details["pads"] == 1
    assert check["ok"] and check["max_abs_error"] < 1e-5


@pytest.mark.parametrize(
    "pads, mode, fill, reason",
    [
        ([0, 0, 1, 1, 0, 0, 1, 1], "reflect", None, "is not 'constant'"),
        ([0, 0, 1, 1, 0, 0, 1, 1], "constant", 1.0, "pads with 1"),
        ([0, 1, 1, 1, 0, 0, 1, 1], "constant", None, "batch or channel"),
    ],
)
def test_pad_guards(pads, mode, fill, reason):
    proto = _padded(pads, mode, fill)
    if pads[1]:  # a padded channel axis does not fit the Conv's weight: check the guard on the graph alone
        graph = gs.import_onnx(proto)
        result = fold_into_conv(graph)
        assert any(reason in r for r in result.skipped) and [n.op for n in graph.nodes] == ["Pad", "Conv"]
        return
    result, after, check = apply(proto, fold_into_conv)
    assert ops(after) == ["Pad", "Conv"]
    assert any(reason in r for r in result.skipped), result.skipped
    assert check["ok"]


# ---------------------------------------------------------------- the runner's cheaper checks


def test_weights_edited_in_place_are_caught_even_when_a_pass_says_it_changed_nothing(monkeypatch):
    """The runner skips the ORT run for a graph identical to the last one it ran; a weight changed in place is not identical."""
    from graph_builders import conv_bn

    def sneaky(graph):
        conv = next(n for n in graph.nodes if n.op == "Conv")
        conv.inputs[1].values *= 1.5
        return PassResult()

    monkeypatch.setitem(runner.PASSES, "fold_into_conv", sneaky)
    with pytest.raises(ValidationFailed, match=r"pass 'fold_into_conv' \(step 3\) changed output"):
        optimize(conv_bn(), target="portable")


def test_passes_that_change_nothing_are_checked_by_identity():
    from graph_builders import conv_bn

    _, report = optimize(conv_bn(), target="onnxruntime")
    by_name = {p["name"]: p for p in report["passes"]}
    assert by_name["fold_residual_scale"]["changed"] == 0
    assert by_name["fold_residual_scale"]["step"] in report["checks_by_identity"]
    assert 2 not in report["checks_by_identity"]  # fold_batchnorm changed the graph: it ran


# ---------------------------------------------------------------- a foreign ResNet, end to end


@pytest.fixture(scope="module")
def foreign():
    return foreign_resnet(size=32, width=8, blocks=2)


@pytest.fixture(scope="module")
def slimmed(foreign):
    onnxslim = pytest.importorskip("onnxslim")
    return onnxslim.slim(foreign)


@pytest.mark.parametrize("target", runner.TARGETS)
def test_foreign_resnet_is_no_bigger_than_onnxslim(foreign, slimmed, target):
    optimized, report = optimize(foreign, target=target)
    counts = Counter(n.op_type for n in optimized.graph.node)
    # Nothing foldable left: no shape arithmetic, no Pad or affine op beside a Conv, no Cast, one Transpose (the NHWC input).
    for op in ("Shape", "Gather", "Concat", "Div", "Max", "Pad", "Sub", "Mul", "Cast", "Identity"):
        assert counts[op] == 0, (op, counts)
    assert counts["Transpose"] == 1
    keys = Counter((n.op_type, tuple(n.input), n.attribute.__repr__()) for n in optimized.graph.node)
    assert max(keys.values()) == 1  # no duplicate nodes
    assert len(optimized.graph.node) <= len(slimmed.graph.node)
    assert report["nodes_after"] == len(optimized.graph.node)
    feeds = make_inputs(foreign, batch=3, seed=11)  # not the runner's inputs, another batch size
    reference = run_ort(foreign, feeds)
    assert compare_outputs(reference, run_ort(optimized, feeds), rtol=1e-5)["ok"]
    assert compare_outputs(reference, run_ort(slimmed, feeds), rtol=1e-5)["ok"]
    by_name = {p["name"]: p for p in report["passes"]}
    assert by_name["fold_into_conv"]["details"] == {"pads": 2, "affine": 18}
    first = report["passes"][0]["details"]
    assert first["duplicate_nodes"] >= 3 and first["transposes_merged"] >= 4 and first["reshape_dims_copied"] == 1


def test_foreign_resnet_is_no_bigger_than_onnxsim(foreign):
    """onnxsim, where its wheel installs (optional): node count only (onnxsim 0.8.1 pads this graph's second Conv wrongly)."""
    onnxsim = pytest.importorskip("onnxsim")
    simplified, _ = onnxsim.simplify(foreign)
    optimized, _ = optimize(foreign, target="portable")
    assert len(optimized.graph.node) <= len(simplified.graph.node)


def test_cli_optimize_of_a_tf2onnx_style_file(tmp_path, foreign):
    """Where the user meets it: ``deployres optimize`` on the foreign file writes a graph with nothing foldable left."""
    import json

    from click.testing import CliRunner

    from deploy_res.cli import cli

    source = tmp_path / "keras_resnet.onnx"
    onnx.save(foreign, str(source))
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(tmp_path / "out.onnx"), "--target", "portable"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "fold_into_conv" in result.output
    optimized = onnx.load(str(tmp_path / "out.onnx"))
    counts = Counter(n.op_type for n in optimized.graph.node)
    assert not counts.keys() & {"Shape", "Gather", "Concat", "Pad", "Cast", "Sub", "Mul"} and counts["Transpose"] == 1
    report = json.loads((tmp_path / "out.onnx.json").read_text())["check"]["passes"]
    assert report["nodes_before"] == len(foreign.graph.node) and report["nodes_after"] == len(optimized.graph.node)


def test_report_rendering_names_the_steps_checked_by_identity():
    from graph_builders import conv_bn
    from rich.console import Console

    from deploy_res.exporters.report import render_report

    _, report = optimize(conv_bn(), target="onnxruntime")
    console = Console(record=True, width=160)
    console.print(render_report(report))
    assert "checked by identity" in console.export_text()


def test_dense_layer_as_matmul_and_add_becomes_one_gemm_only_in_2d():
    r = rng(6)
    inits = [init("W", r.standard_normal((4, 3)).astype(np.float32)), init("bias", r.standard_normal(3).astype(np.float32))]
    nodes = [
        helper.make_node("MatMul", ["flat", "W"], ["y"], "fc"),
        helper.make_node("Add", ["y", "bias"], ["output"], "fc_bias"),
        helper.make_node("MatMul", ["seq", "W"], ["z"], "fc3d"),  # 3-D: Gemm cannot take it
        helper.make_node("Add", ["z", "bias"], ["output3d"], "fc3d_bias"),
    ]
    proto = model(nodes, [value("flat", ["batch", 4]), value("seq", ["batch", 5, 4])], [value("output", ["batch", 3]), value("output3d", ["batch", 5, 3])], inits)
    result, after, check = apply(proto, cleanup)
    assert sorted(ops(after)) == ["Add", "Gemm", "MatMul"] and node(after, "Gemm").output[0] == "output"
    assert result.details["dense_to_gemm"] == 1
    assert check["ok"] and check["max_rel_error"] < 1e-6
