"""validate: artifacts that compute what PyTorch computes pass; broken ones fail, pointing at the output."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import run_cli
from onnx import numpy_helper

from deploy_res.core.errors import DeployResError
from deploy_res.export import ExportSettings, export
from deploy_res.validation import ValidateSettings, validate
from deploy_res.validation.metrics import accuracy, compare

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """resnet18 with BN statistics like a trained net's (small variances make epsilon matter), exported."""
    from deploy_res.loading import load_model

    folder = tmp_path_factory.mktemp("validate")
    model = load_model("resnet18").module
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) * 0.01 + 0.002)
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.05)
    weights = folder / "resnet18.pth"
    torch.save(model.state_dict(), weights)
    result = export("resnet18", folder, ExportSettings(weights=weights, input_size=SIZE, exporter="torchscript"))
    return result


def _copy_with_manifest(src, dst):
    shutil.copy(src, dst)
    shutil.copy(str(src) + ".json", str(dst) + ".json")
    return dst


def test_metrics_on_known_values():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    got = np.array([[1.0, 2.0, 3.5], [1.0, 2.0, 3.0]])
    m = compare(ref, got)
    assert m["max_abs_error"] == 2.0 and m["max_rel_error"] == pytest.approx(2 / 3)
    assert m["top1_agreement"] == 0.5 and m["top5_agreement"] == 1.0
    assert m["cosine_min"] == pytest.approx(10 / 14)
    assert accuracy(ref, np.array([2, 1]))["top1"] == 0.5
    assert compare(ref, np.array([[np.nan, 0, 0], [0, 0, 1.0]]))["nonfinite"] == 1


def test_raw_and_optimised_onnx_pass(trained_like, tmp_path):
    for artifact in (trained_like.onnx_path, trained_like.optimized_path):
        result = validate(artifact, ValidateSettings(samples=8), output=tmp_path / "r.json")
        assert result["passed"], result["failed"]
        assert result["reference"]["kind"] == "pytorch" and result["inputs"]["kind"] == "random"
        assert json.loads((tmp_path / "r.json").read_text())["passed"] is True


def test_cli_exit_zero_and_table(trained_like, tmp_path):
    result = run_cli("validate", trained_like.optimized_path, "--samples", 8, "--json", tmp_path / "v.json", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "max_rel_error" in result.output and "PASS" in result.output


def _tamper(src_result, dst, change):
    model = onnx.load(str(src_result))
    change(model)
    onnx.save(model, str(dst))
    shutil.copy(str(src_result) + ".json", str(dst) + ".json")
    return dst


def test_bn_folded_with_wrong_epsilon_fails(trained_like, tmp_path):
    def wrong_eps(model):
        for node in model.graph.node:
            if node.op_type == "BatchNormalization":
                for attr in node.attribute:
                    if attr.name == "epsilon":
                        attr.f = 1e-3
    raw_bad = _tamper(trained_like.onnx_path, tmp_path / "bad_eps.onnx", wrong_eps)
    from deploy_res.optimize import optimize_file

    folded = tmp_path / "bad_eps.opt.onnx"
    optimize_file(raw_bad, folded)  # the passes are faithful to the (wrong) graph they are given
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(folded)).graph.node)
    result = run_cli("validate", folded, "--samples", 8, catch_exceptions=False)
    assert result.exit_code == 1
    assert "FAILED validation: output 'logits'" in result.output


def test_conv_weight_scaled_by_one_percent_fails(trained_like, tmp_path):
    def scale_one_conv(model):
        conv = next(n for n in model.graph.node if n.op_type in ("Conv", "FusedConv"))
        init = next(i for i in model.graph.initializer if i.name == conv.input[1])
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))
    bad = _tamper(trained_like.optimized_path, tmp_path / "bad_w.opt.onnx", scale_one_conv)
    result = run_cli("validate", bad, "--samples", 8, catch_exceptions=False)
    assert result.exit_code == 1 and "output 'logits': max_rel_error" in result.output


def test_nan_output_is_named(trained_like, tmp_path):
    def nan_bias(model):
        gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
        init = next(i for i in model.graph.initializer if i.name == gemm.input[2])
        values = numpy_helper.to_array(init).copy()
        values[3] = np.nan
        init.CopyFrom(numpy_helper.from_array(values, init.name))
    bad = _tamper(trained_like.optimized_path, tmp_path / "nan.opt.onnx", nan_bias)
    result = run_cli("validate", bad, "--samples", 4, catch_exceptions=False)
    assert result.exit_code == 1 and "output 'logits': finite" in result.output


def test_missing_model_and_weights_are_one_line(trained_like, tmp_path):
    art = _copy_with_manifest(trained_like.optimized_path, tmp_path / "m.opt.onnx")
    manifest = json.loads(art.with_name(art.name + ".json").read_text())
    manifest["model"]["weights"]["path"] = str(tmp_path / "gone.pth")
    art.with_name(art.name + ".json").write_text(json.dumps(manifest))
    result = run_cli("validate", art, catch_exceptions=False)
    assert result.exit_code == 2 and "weights" in result.output and "--reference" in result.output
    manifest["model"] = {"source": "not_a_model", "weights": None}
    art.with_name(art.name + ".json").write_text(json.dumps(manifest))
    result = run_cli("validate", art, catch_exceptions=False)
    assert result.exit_code == 2 and "cannot rebuild the manifest's model 'not_a_model'" in result.output


def test_reference_onnx_and_wrong_input_shape(trained_like, tmp_path):
    result = validate(trained_like.optimized_path, ValidateSettings(reference=str(trained_like.onnx_path), samples=4), output=tmp_path / "a.json")
    assert result["passed"] and result["reference"]["kind"] == "onnx"
    arrays = tmp_path / "x.npy"
    np.save(arrays, np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(DeployResError, match="expects"):
        validate(trained_like.optimized_path, ValidateSettings(data=str(arrays)), output=tmp_path / "b.json")


def test_labelled_arrays_give_accuracy_and_unknown_classes_fail(tmp_path, monkeypatch):
    (tmp_path / "tinymodels.py").write_text(textwrap.dedent("""
        from deploy_res.models.resnet import ResNet, BasicBlock
        def tiny3():
            return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    result = export("tinymodels:tiny3", tmp_path / "out", ExportSettings(input_size=(3, 32, 32), exporter="torchscript"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ok.npz", inputs=rng.standard_normal((12, 3, 32, 32)).astype(np.float32), labels=rng.integers(0, 3, 12))
    ok = validate(result.optimized_path, ValidateSettings(data=str(tmp_path / "ok.npz")), output=tmp_path / "ok.json")
    assert ok["accuracy"] is not None and ok["passed"] and ok["accuracy"]["top1_drop_points"] == 0
    np.savez(tmp_path / "bad.npz", inputs=rng.standard_normal((4, 3, 32, 32)).astype(np.float32), labels=np.array([0, 1, 5, 2]))
    with pytest.raises(DeployResError, match="the model outputs 3"):
        validate(result.optimized_path, ValidateSettings(data=str(tmp_path / "bad.npz")), output=tmp_path / "bad.json")


def test_runner_closed_when_an_error_is_raised_mid_way(trained_like, tmp_path, monkeypatch):
    """validate loads the engine in a ``with`` block: a batch that fails half-way through still closes it."""
    import deploy_res.engines

    artifact = _copy_with_manifest(trained_like.onnx_path, tmp_path / "model.onnx")
    real_load, loaded = deploy_res.engines.load_engine, []

    def load_engine(path, **options):
        runner = real_load(path, **options)
        real_run, real_close, calls = runner.run, runner.close, []

        def run(feeds):
            calls.append(len(calls))
            if len(calls) == 2:
                raise DeployResError("the second batch breaks")
            return real_run(feeds)

        def close():
            runner.closed = True
            real_close()

        runner.run, runner.close, runner.closed = run, close, False
        loaded.append(runner)
        return runner

    monkeypatch.setattr(deploy_res.engines, "load_engine", load_engine)
    with pytest.raises(DeployResError, match="the second batch breaks"):
        validate(artifact, ValidateSettings(samples=4, batch=2))
    assert len(loaded) == 1 and loaded[0].closed
