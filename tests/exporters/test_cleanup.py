"""cleanup on hand-built graphs: pass-through nodes, exporter constant chains, no-ops, dead nodes, duplicates."""

from __future__ import annotations

import numpy as np
from graph_builders import apply, init, model, node, ops, rng, value
from onnx import TensorProto, helper, numpy_helper

from deploy_res.exporters.passes import cleanup

SHAPE = ["batch", 4, 6, 6]


def test_identity_and_dropout_are_dropped_and_output_names_kept():
    nodes = [
        helper.make_node("Identity", ["input"], ["a"], "id0"),
        helper.make_node("Relu", ["a"], ["b"], "relu"),
        helper.make_node("Dropout", ["b"], ["c"], "drop"),
        helper.make_node("Identity", ["c"], ["output"], "id_out"),  # feeds the graph output
    ]
    result, after, check = apply(model(nodes, [value("input", SHAPE)], [value("output", SHAPE)]), cleanup)
    assert ops(after) == ["Relu"]
    assert list(node(after, "Relu").output) == ["output"] and after.graph.output[0].name == "output"
    assert result.details["identity_dropout_removed"] == 3
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_identity_from_graph_input_to_output_is_kept_with_reason():
    nodes = [helper.make_node("Identity", ["input"], ["output"], "passthrough")]
    result, after, _ = apply(model(nodes, [value("input", SHAPE)], [value("output", SHAPE)]), cleanup)
    assert ops(after) == ["Identity"]
    assert "graph output" in result.skipped[0]


def test_identity_shared_parameters_become_plain_initializers():
    """The TorchScript exporter shares equal BN parameters through Identity nodes."""
    nodes = [
        helper.make_node("Identity", ["ones"], ["scale"], "Identity_0"),
        helper.make_node("Mul", ["input", "scale"], ["output"], "mul"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)], [init("ones", np.ones((4, 1, 1), np.float32))])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Mul"] and node(after, "Mul").input[1] == "ones"
    assert check["ok"]


def test_dynamo_zero_bias_chain_folds_to_a_constant():
    """``Shape(W)[0:1] -> Expand -> CastLike(0, x) -> Expand`` (torch's dynamo exporter) becomes an initializer."""
    weight = rng().standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["W"], ["w_shape"], "shape", start=0, end=1),
        helper.make_node("Constant", [], ["one"], "one", value_ints=[1]),
        helper.make_node("Expand", ["w_shape", "one"], ["n_out"], "expand_shape"),
        helper.make_node("Constant", [], ["zero"], "zero", value=numpy_helper.from_array(np.array(0.0, np.float64))),
        helper.make_node("CastLike", ["zero", "input"], ["zero_f"], "castlike"),
        helper.make_node("Expand", ["zero_f", "n_out"], ["bias"], "expand_bias"),
        helper.make_node("Conv", ["input", "W", "bias"], ["output"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)], [init("W", weight)])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Conv"]
    bias = next(t for t in after.graph.initializer if t.name == node(after, "Conv").input[2])
    assert bias.data_type == TensorProto.FLOAT and numpy_helper.to_array(bias).tolist() == [0.0] * 4
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_shape_start_end_is_honoured_when_folding():
    """onnx-graphsurgeon 0.6.1's own Shape folding ignores ``start``; ours must not."""
    nodes = [
        helper.make_node("Shape", ["input"], ["tail"], "shape", start=2),
        helper.make_node("Constant", [], ["minus1"], "m1", value_ints=[-1]),
        helper.make_node("Concat", ["minus1", "tail"], ["new_shape"], "concat", axis=0),
        helper.make_node("Reshape", ["input", "new_shape"], ["output"], "reshape"),
    ]
    proto = model(nodes, [value("input", [2, 4, 6, 6])], [value("output", [8, 6, 6])])
    result, after, check = apply(proto, cleanup, batch=2)
    assert ops(after) == ["Reshape"]
    shape = next(t for t in after.graph.initializer if t.name == node(after, "Reshape").input[1])
    assert numpy_helper.to_array(shape).tolist() == [-1, 6, 6]
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_shape_gather_of_static_dim_folds_with_dynamic_batch():
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"], "shape"),
        helper.make_node("Constant", [], ["idx"], "idx", value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Gather", ["shape", "idx"], ["channels"], "gather", axis=0),
        helper.make_node("Cast", ["channels"], ["channels_f"], "cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["input", "channels_f"], ["output"], "mul"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Mul"]
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_castlike_becomes_cast_and_noops_go():
    nodes = [
        helper.make_node("CastLike", ["input", "like"], ["as_half"], "castlike"),
        helper.make_node("Cast", ["as_half"], ["back"], "back", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["back"], ["same"], "noop_cast", to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["ones"], "ones", value_ints=[1, 1, 1]),
        helper.make_node("Expand", ["same", "ones"], ["output"], "noop_expand"),
    ]
    proto = model(nodes, [value("input", SHAPE), value("like", [1], np.float16)], [value("output", SHAPE)])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Cast", "Cast", "Expand"] or ops(after) == ["Cast", "Cast"]
    assert result.details["castlike_to_cast"] == 1 and result.details["noops_removed"] >= 1
    assert check["ok"] and check["max_abs_error"] == 0.0


def test_noop_expand_before_another_node_is_removed():
    nodes = [
        helper.make_node("Constant", [], ["ones"], "ones", value_ints=[4, 1, 1]),
        helper.make_node("Expand", ["input", "ones"], ["expanded"], "noop_expand"),
        helper.make_node("Relu", ["expanded"], ["output"], "relu"),
    ]
    result, after, check = apply(model(nodes, [value("input", SHAPE)], [value("output", SHAPE)]), cleanup)
    assert ops(after) == ["Relu"]
    assert check["ok"]


def test_dead_nodes_and_duplicate_initializers_are_removed():
    table = np.arange(4, dtype=np.float32).reshape(4, 1, 1)
    nodes = [
        helper.make_node("Mul", ["input", "t1"], ["a"], "mul1"),
        helper.make_node("Add", ["a", "t2"], ["output"], "add"),
        helper.make_node("Sigmoid", ["input"], ["unused"], "dead"),
    ]
    proto = model(nodes, [value("input", SHAPE)], [value("output", SHAPE)], [init("t1", table), init("t2", table.copy())])
    result, after, check = apply(proto, cleanup)
    assert ops(after) == ["Mul", "Add"]
    assert result.details["dead_nodes_removed"] == 1 and result.details["duplicate_initializers"] == 1
    assert len(after.graph.initializer) == 1
    assert check["ok"] and check["max_abs_error"] == 0.0
