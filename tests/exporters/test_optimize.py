"""The pass runner: numerical checks that catch a broken pass, the report, saving, and zoo models end to end."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graph_builders import conv_bn, model, value
from onnx import helper
from rich.console import Console

import deploy_res.exporters.checks as checks
import deploy_res.exporters.pass_runner as runner
from deploy_res.core.errors import DeployResError, ValidationFailed
from deploy_res.models import create_model, list_models
from deploy_res.exporters.checks import compare_outputs, make_inputs, run_ort
from deploy_res.core.onnx_io import save_onnx
from deploy_res.exporters.pass_runner import CHECKED_WHEN_SAVED, optimize
from deploy_res.optimize import OptimizeSettings, optimize_file
from deploy_res.exporters.report import render_report
from deploy_res.exporters.passes import fold_batchnorm

STANDARD_DOMAINS = ("", "ai.onnx")
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")


def _ignore_epsilon(graph):
    """fold_batchnorm with a bug: it treats every epsilon as 0."""
    for node in graph.nodes:
        if node.op == "BatchNormalization":
            node.attrs["epsilon"] = 0.0
    return fold_batchnorm(graph)


def test_broken_pass_is_caught_and_named(monkeypatch):
    monkeypatch.setitem(runner.PASSES, "fold_batchnorm", _ignore_epsilon)
    with pytest.raises(ValidationFailed, match=r"pass 'fold_batchnorm' \(step 2\) changed output 'output'"):
        optimize(conv_bn(eps=1e-3), target="portable")


def test_pass_that_breaks_the_graph_is_caught(monkeypatch):
    def drop_weights(graph):
        conv = next(node for node in graph.nodes if node.op == "Conv")
        conv.inputs[1].values = conv.inputs[1].values[:, :1]  # wrong weight shape
        return fold_batchnorm(graph)

    monkeypatch.setitem(runner.PASSES, "fold_batchnorm", drop_weights)
    with pytest.raises(ValidationFailed, match="pass 'fold_batchnorm'"):
        optimize(conv_bn(), target="portable")


def test_report_schema_and_rendering():
    optimized, report = optimize(conv_bn(groups=2, eps=1e-3), target="onnxruntime", batch=3)
    assert set(report) >= {"target", "passes_run", "batch", "input_shapes", "seed", "rtol", "atol", "ops_before", "ops_after", "passes", "max_abs_error", "max_rel_error", "seconds", "onnx_checker"}
    assert report["batch"] == 3 and report["input_shapes"] == {"input": [3, 64, 6, 6]} and report["rtol"] == 1e-4
    assert report["ops_before"] == {"Conv": 1, "BatchNormalization": 1} and report["ops_after"] == {"Conv": 1}
    assert [p["name"] for p in report["passes"]] == list(runner.PIPELINES["onnxruntime"])
    for entry in report["passes"]:
        assert set(entry) == {"name", "step", "changed", "skipped", "details", "max_abs_error", "max_rel_error", "seconds", "check_seconds"}
    assert report["passes"][1]["changed"] == 1
    json.dumps(report)  # the manifest needs plain JSON
    console = Console(record=True, width=120)
    console.print(render_report(report))
    text = console.export_text()
    assert "fold_batchnorm" in text and "BatchNormalization" in text


def test_fp16_graph_uses_the_fp16_tolerance():
    _, report = optimize(conv_bn(dtype=np.float16, eps=1e-3), target="portable")
    assert report["rtol"] == checks.DEFAULT_RTOL_FP16 and report["ops_after"] == {"Conv": 1}


def test_dynamic_spatial_axes_need_shapes():
    nodes = [helper.make_node("Relu", ["input"], ["output"], "relu")]
    proto = model(nodes, [value("input", ["batch", 3, "height", "width"])], [value("output", ["batch", 3, "height", "width"])])
    with pytest.raises(DeployResError, match=r"input 'input' has a dynamic axis 2 \('height'\).*input_shapes"):
        optimize(proto)
    _, report = optimize(proto, input_shapes={"input": [2, 3, 8, 8]})
    assert report["input_shapes"] == {"input": [2, 3, 8, 8]}


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(DeployResError, match="unknown target 'tensorrtx'"):
        optimize(conv_bn(), target="tensorrtx")
    with pytest.raises(DeployResError, match="no ONNX file"):
        optimize(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DeployResError, match="cannot read"):
        optimize(tmp_path / "junk.onnx")


def test_saves_model_and_manifest(tmp_path):
    source = tmp_path / "in.onnx"
    onnx.save_model(conv_bn(), str(source))
    out = tmp_path / "out.opt.onnx"
    optimize_file(source, out)
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved)
    assert [n.op_type for n in saved.graph.node] == ["Conv"]
    manifest = json.loads((tmp_path / "out.opt.onnx.json").read_text())
    assert manifest["stage"] == "optimize" and manifest["inputs"]["onnx"]["path"] == str(source)
    assert manifest["check"]["passes"]["passes"][1]["name"] == "fold_batchnorm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "out.opt.onnx", "out.opt.onnx.json"]


def test_large_models_save_weights_as_external_data(tmp_path, monkeypatch):
    """Past protobuf's 2 GB limit (lowered here) the weights go to ``<name>.data`` and the checker reads the file."""
    from deploy_res.core import onnx_io

    monkeypatch.setattr(runner, "PROTOBUF_LIMIT", 10_000)
    monkeypatch.setattr(onnx_io, "PROTOBUF_LIMIT", 10_000)
    source = tmp_path / "big.onnx"
    onnx.save_model(conv_bn(), str(source))
    out = tmp_path / "big.opt.onnx"
    optimized, report = optimize(source, target="onnxruntime")
    assert report["onnx_checker"] == CHECKED_WHEN_SAVED  # in memory the checker cannot read a model this large
    assert all(t.raw_data for t in optimized.graph.initializer if t.dims)  # the returned model keeps its weights
    manifest = optimize_file(source, out, OptimizeSettings(target="onnxruntime"))
    assert (tmp_path / "big.opt.onnx.data").stat().st_size > 10_000
    assert manifest["check"]["passes"]["onnx_checker"] == "passed"  # read from the saved file
    feeds = make_inputs(optimized, batch=2)
    reloaded = onnx.load(str(out))
    assert compare_outputs(run_ort(optimized, feeds), run_ort(reloaded, feeds), rtol=0.0)["ok"]


# ---------------------------------------------------------------- zoo models, exported with BatchNorm kept


def _randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics so folding has something to get wrong."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
            bn.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            bn.weight.copy_(torch.rand(n, generator=generator) * 0.8 + 0.2)
            bn.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    """``zoo_onnx(name)`` -> path of a TorchScript export with BatchNorm kept (dynamic batch), cached per module."""
    cache = {}
    folder = tmp_path_factory.mktemp("zoo")

    def get(name: str, size: int = 64, randomize: bool = True):
        if (name, size) not in cache:
            net = create_model(name).eval()
            if randomize:
                _randomize_batchnorm(net)
            path = folder / f"{name}-{size}.onnx"
            torch.onnx.export(
                net,
                torch.randn(1, 3, size, size),
                str(path),
                dynamo=False,
                training=torch.onnx.TrainingMode.PRESERVE,
                do_constant_folding=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
            )
            cache[(name, size)] = path
        return cache[(name, size)]

    return get


def _assert_numbers_kept(source, optimized: onnx.ModelProto, size: int = 64) -> None:
    """Fresh inputs (not the runner's), batch 3: logits within 1e-4 of the largest logit."""
    raw = onnx.load(str(source))
    feeds = make_inputs(raw, batch=3, seed=123)
    check = compare_outputs(run_ort(raw, feeds), run_ort(optimized, feeds), rtol=1e-4)
    assert check["ok"] and check["max_rel_error"] < 1e-4, check


def _nchwc_nodes(model_path_or_bytes, tmp_path, name) -> Counter:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / f"{name}.ort_all.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model_path_or_bytes, options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    return Counter(f"{n.domain}.{n.op_type}" for n in graph.node if n.domain == "com.microsoft.nchwc")


@pytest.mark.slow
def test_resnet50_onnxruntime(zoo_onnx, tmp_path):
    source = zoo_onnx("resnet50")
    assert Counter(n.op_type for n in onnx.load(str(source)).graph.node)["BatchNormalization"] == 53
    optimized, report = optimize(source, target="onnxruntime")
    save_onnx(optimized, tmp_path / "resnet50.opt.onnx")
    ops = Counter(n.op_type for n in optimized.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Add"] == 0 and ops["Identity"] == 0
    fused = [n for n in optimized.graph.node if n.op_type == "FusedConv"]
    assert len(fused) == 16 and all(n.domain == "com.microsoft" and len(n.input) == 4 and n.input[3] for n in fused)
    assert all(helper.get_attribute_value(next(a for a in n.attribute if a.name == "activation")) == b"Relu" for n in fused)
    assert {o.domain: o.version for o in optimized.opset_import}["com.microsoft"] == 1
    assert report["ops_after"]["com.microsoft.FusedConv"] == 16
    _assert_numbers_kept(source, optimized)
    # ORT's level-3 layout transform must still apply to the pre-fused file (FACTS.md).
    raw_nchwc = _nchwc_nodes(str(source), tmp_path, "raw")
    assert raw_nchwc["com.microsoft.nchwc.Conv"] == 53
    assert _nchwc_nodes(str(tmp_path / "resnet50.opt.onnx"), tmp_path, "opt") == raw_nchwc


@pytest.mark.slow
def test_resnet50_tensorrt(zoo_onnx):
    source = zoo_onnx("resnet50")
    optimized, report = optimize(source, target="tensorrt")
    assert all(n.domain in STANDARD_DOMAINS for n in optimized.graph.node)
    assert {o.domain for o in optimized.opset_import} <= set(STANDARD_DOMAINS)
    ops = Counter(n.op_type for n in optimized.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Add"] == 16
    adds = report["residual_adds"]
    assert len(adds) == 16
    by_output = {n.output[0]: n for n in optimized.graph.node}
    producers = {o: n for n in optimized.graph.node for o in n.output}
    for entry in adds:
        assert entry["conv_input"] and entry["relu"] and entry["skip_input"] != entry["conv_input"]
        assert producers[entry["conv_input"]].op_type == "Conv"  # contiguous Conv -> Add -> Relu
        assert by_output[entry["output"]].op_type == "Add"
    _assert_numbers_kept(source, optimized)


@pytest.mark.slow
def test_resnet50_portable(zoo_onnx):
    source = zoo_onnx("resnet50")
    optimized, report = optimize(source, target="portable")
    ops = Counter(n.op_type for n in optimized.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Add"] == 16 and ops["Conv"] == 53
    assert all(n.domain in STANDARD_DOMAINS for n in optimized.graph.node)
    assert "residual_adds" not in report
    _assert_numbers_kept(source, optimized)


# resnet18 keeps the default BN init, whose equal parameters the TorchScript exporter shares through Identity nodes.
@pytest.mark.slow
@pytest.mark.parametrize("name, fused, randomize", [("resnet18", 8, False), ("resnext50_32x4d", 16, True), ("seresnet50", 4, True)])
def test_zoo_models_onnxruntime(zoo_onnx, name, fused, randomize):
    """SE blocks end their branch in the gate's Mul: only the 4 projection shortcuts' Convs can take the skip as Z."""
    source = zoo_onnx(name, randomize=randomize)
    optimized, report = optimize(source, target="onnxruntime")
    ops = Counter(n.op_type for n in optimized.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Identity"] == 0
    assert ops["FusedConv"] == fused
    _assert_numbers_kept(source, optimized)


@pytest.mark.slow
@pytest.mark.skipif("inception_resnet_v2" not in list_models(), reason="inception_resnet_v2 is not registered")
def test_inception_resnet_v2_scaled_residuals(zoo_onnx):
    source = zoo_onnx("inception_resnet_v2", size=107)
    optimized, report = optimize(source, target="onnxruntime")
    by_name = {p["name"]: p for p in report["passes"]}
    assert by_name["fold_residual_scale"]["details"]["residual"] == 40
    ops = Counter(n.op_type for n in optimized.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Mul"] == 0 and ops["FusedConv"] == 40
    _assert_numbers_kept(source, optimized)
