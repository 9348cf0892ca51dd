"""Stage mapping and ONNX Runtime profile parsing."""

from __future__ import annotations

import pytest

from deploy_res.profiling.layers import breakdown, parse_ort_profile, stage_of


@pytest.mark.parametrize("name, stage", [
    ("/conv1/Conv", "stem"), ("/relu/Relu_output_0_nchwc", "stem"), ("/maxpool/MaxPool", "stem"),
    ("/layer1/layer1.0/conv1/Conv", "stage1"), ("/layer4/layer4.1/relu_1/Relu_output_0_nchwc", "stage4"),
    ("/layer2/layer2.0/downsample/downsample.1/BatchNormalization_output_0_nchwc", "stage2"),
    ("/avgpool/GlobalAveragePool", "head"), ("/fc/Gemm", "head"), ("/Flatten", "head"),
    ("ReorderOutput", "other"), ("node_Conv_12", "other"),
    ("/repeat_1/repeat_1.3/Add", "stage2"), ("/repeat/repeat.0/Add", "stage1"), ("/classif/Gemm", "head"),
    ("/layer3/layer3.0/conv1/Conv + /layer3/layer3.0/relu/Relu", "stage3"),
])
def test_stage_of(name, stage):
    assert stage_of(name) == stage


def test_dynamo_scope_decides_the_stage():
    assert stage_of("node_Conv_12", scope="/layer3/layer3.1/conv2") == "stage3"


def _event(name, op, ts, dur, cat="Node"):
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": {"op_name": op} if cat == "Node" else {}}


def test_parse_ort_profile_splits_runs_by_batch_and_averages():
    events = [_event("model_loading_uri", "", 0, 5, "Session")]
    for run, (start, scale) in enumerate([(100, 1), (200, 1), (300, 4)]):
        events.append(_event("model_run", "", start, 50, "Session"))
        events.append(_event("/conv1/Conv_kernel_time", "Conv", start + 1, 1000 * scale))
        events.append(_event("/layer1/layer1.0/conv1/Conv_kernel_time", "Conv", start + 2, 3000 * scale))
        events.append(_event("/fc/Gemm_kernel_time", "Gemm", start + 3, 1000 * scale))
        events.append(_event("/fc/Gemm_fence_before", "Gemm", start + 3, 999))  # not a kernel: ignored
    result = parse_ort_profile(events, run_batches=[1, 1, 8])
    one, eight = result[1], result[8]
    assert one["runs"] == 2 and one["total_ms"] == pytest.approx(5.0)
    assert eight["runs"] == 1 and eight["total_ms"] == pytest.approx(20.0)
    assert {s["stage"]: s["share"] for s in one["by_stage"]} == pytest.approx({"stem": 0.2, "stage1": 0.6, "head": 0.2})
    assert [o["op_type"] for o in one["by_op_type"]] == ["Conv", "Gemm"]
    assert one["top_layers"][0]["name"] == "/layer1/layer1.0/conv1/Conv" and one["top_layers"][0]["ms"] == pytest.approx(3.0)


def test_breakdown_of_nothing_is_empty_not_an_error():
    empty = breakdown([], runs=0)
    assert empty["total_ms"] == 0 and empty["top_layers"] == [] and empty["by_stage"] == []


def test_dynamo_metadata_is_found_through_the_manifest_chain(tmp_path):
    """An ORT engine of a dynamo export has no metadata; its source ONNX's ``name_scopes`` name the stages."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from deploy_res.profiling.layers import _scope_for, onnx_scopes

    def graph_file(path, with_metadata):
        nodes = [helper.make_node("Relu", ["x"], ["relu_3"], name="node_relu_3"), helper.make_node("Identity", ["relu_3"], ["y"], name="node_linear")]
        if with_metadata:
            for node, scopes in zip(nodes, ("['', 'layer2', 'layer2.0', 'relu']", "['', 'fc', 'linear']")):
                node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=scopes)
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(graph), path)

    graph_file(tmp_path / "m.onnx", True)
    graph_file(tmp_path / "m.ort.onnx", False)
    (tmp_path / "m.ort.onnx.json").write_text(json.dumps({"source": {"path": str(tmp_path / "m.onnx")}}))
    scopes = onnx_scopes(tmp_path / "m.ort.onnx")
    assert stage_of("relu_3_nchwc", _scope_for("relu_3_nchwc", scopes)) == "stage2"
    assert stage_of("linear", _scope_for("linear", scopes)) == "head"
    assert stage_of("node_relu_3_token_34", _scope_for("node_relu_3_token_34", scopes)) == "stage2"  # an INT8 QLinear* node
