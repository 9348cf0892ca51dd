"""Issue 9 through the CLI: a legacy checkpoint exports and validates, --input-shape opens ONNX files with
dynamic H/W, and profile with nothing measured is an error."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import one_error_line, run_cli
from graph_builders import bn_params, init, model, rng, value
from onnx import helper


def test_checkpoint_from_an_old_pytorch_exports_and_validates(tmp_path):
    """No num_batches_tracked, BatchNorm metadata version 1: what load_state_dict(strict=True) accepts."""
    from deploy_res.loading import load_model

    state = load_model("resnet18", init_seed=4).module.state_dict()
    old = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    old._metadata = OrderedDict((k, {**v, "version": 1}) for k, v in state._metadata.items())
    weights = tmp_path / "old.pth"
    torch.save({"state_dict": old, "epoch": 90}, weights)
    exported = run_cli("export", "resnet18", "--weights", weights, "--input-size", "3,32,32", "--exporter", "torchscript", "-o", tmp_path / "out")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((tmp_path / "out" / "resnet18.opt.onnx.json").read_text())
    assert manifest["model"]["weights"]["path"] == str(weights.absolute())
    validated = run_cli("validate", tmp_path / "out" / "resnet18.opt.onnx", "--samples", 4)
    assert validated.exit_code == 0, validated.output
    assert "PASS" in validated.output


def _dynamic_hw() -> onnx.ModelProto:
    """``Relu(BN(Conv(x)))`` with input (batch, 3, h, w): every axis but C dynamic."""
    params, names = bn_params("bn", 4)
    nodes = [helper.make_node("Conv", ["input", "W"], ["c"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", *names], ["b"], "bn"),
             helper.make_node("Relu", ["b"], ["output"], "relu")]
    inits = [init("W", (rng(1).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)), *params]
    return model(nodes, [value("input", ["batch", 3, "h", "w"])], [value("output", ["batch", 4, "h", "w"])], inits)


@pytest.fixture
def dynamic_onnx(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_hw(), str(path))
    return path


def test_optimize_dynamic_hw_needs_and_takes_input_shape(dynamic_onnx, tmp_path):
    line = one_error_line(run_cli("optimize", dynamic_onnx, "-o", tmp_path / "a.opt.onnx"))
    assert "--input-shape input:N,C,H,W" in line
    for shape in ("1,3,16,16", "input:2,3,20,12"):
        out = tmp_path / f"{shape.replace(':', '_').replace(',', 'x')}.opt.onnx"
        result = run_cli("optimize", dynamic_onnx, "--input-shape", shape, "-o", out)
        assert result.exit_code == 0, result.output
        assert "BatchNormalization" not in [n.op_type for n in onnx.load(str(out)).graph.node]
        settings = json.loads(out.with_name(out.name + ".json").read_text())["settings"]
        assert settings["input_shapes"]["input"] == [int(d) for d in shape.split(":")[-1].split(",")]
    line = one_error_line(run_cli("optimize", dynamic_onnx, "--input-shape", "1,3,x", "-o", tmp_path / "b.opt.onnx"))
    assert "--input-shape" in line or "N,C,H,W" in line


def test_build_engine_dynamic_hw_takes_input_shape(dynamic_onnx, tmp_path):
    line = one_error_line(run_cli("build-engine", dynamic_onnx, "--backend", "onnxruntime", "-o", tmp_path / "out"))
    assert "--input-shape" in line
    result = run_cli("build-engine", dynamic_onnx, "--backend", "onnxruntime", "--input-shape", "1,3,16,16", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    engine = tmp_path / "out" / "dyn.fp32.cpu.ort.onnx"
    from deploy_res.engines import load_engine

    runner = load_engine(engine)
    x = np.random.default_rng(0).standard_normal((2, 3, 24, 10)).astype(np.float32)  # any H/W still runs
    assert runner.run({"input": x})["output"].shape == (2, 4, 24, 10)


def test_input_shape_without_a_name_on_a_two_input_model_is_one_line(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["output"], "add")]
    path = tmp_path / "two.onnx"
    onnx.save(model(nodes, [value("a", ["batch", 3, "h", "w"]), value("b", ["batch", 3, "h", "w"])], [value("output", ["batch", 3, "h", "w"])]), str(path))
    line = one_error_line(run_cli("optimize", path, "--input-shape", "1,3,4,4", "-o", tmp_path / "two.opt.onnx"))
    assert "2 inputs (a, b)" in line and "--input-shape NAME:" in line
    result = run_cli("optimize", path, "--input-shape", "a:1,3,4,4", "--input-shape", "b:1,3,4,4", "-o", tmp_path / "two.opt.onnx")
    assert result.exit_code == 0, result.output


def test_profile_with_nothing_measured_exits_non_zero(tmp_path):
    junk = tmp_path / "notes.onnx"
    junk.write_text("this is not an ONNX model")
    line = one_error_line(run_cli("profile", junk, "--iterations", 1, "--batches", 1, "--warmup-s", 0, "--layer-iterations", 0, "-o", tmp_path / "report"))
    assert "nothing was measured" in line and "notes.onnx" in line
