"""The CLI: exit codes and one-line errors, through click's test runner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from deploy_res.cli import cli


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args), catch_exceptions=False)


def test_models_lists_every_model_with_exact_counts(run):
    result = run("models")
    assert result.exit_code == 0
    for name, params in [("resnet18", "11,689,512"), ("resnet34", "21,797,672"), ("resnet50", "25,557,032"),
                         ("resnet101", "44,549,160"), ("resnet152", "60,192,808"), ("resnext50_32x4d", "25,028,904"),
                         ("resnext101_32x8d", "88,791,336"), ("wide_resnet50_2", "68,883,240"), ("seresnet50", "28,088,024"),
                         ("seresnext50_32x4d", "27,559,896"), ("inception_resnet_v2", "55,843,464")]:
        line = next(l for l in result.output.splitlines() if f" {name} " in l)
        assert params in line, line
    assert "8.18" in next(l for l in result.output.splitlines() if " resnet50 " in l)  # GFLOPs


def test_export_prints_parity_and_paths(run, tmp_path):
    result = run("export", "resnet18", "-o", str(tmp_path), "--input-size", "3,64,64", "--exporter", "torchscript", "--no-optimize")
    assert result.exit_code == 0, result.output
    assert "parity batch 1" in result.output and "parity batch 4" in result.output
    assert (tmp_path / "resnet18.onnx").exists() and (tmp_path / "resnet18.onnx.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "resnet5"], "unknown model 'resnet5'; did you mean resnet50"),
        (["export", "nope.mod:f"], "cannot import 'nope.mod'"),
        (["export", "deploy_res.models.registry:list_models"], "not a torch.nn.Module"),
        (["export", "resnet18", "--input-size", "3,64"], "must be 3 positive integers"),
        (["export", "resnet18", "--input-size", "a,b,c"], "is not 3 integers"),
        (["export", "resnet18", "--batch-range", "8,4,2"], "1 <= min <= opt <= max"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(run, tmp_path, args, message):
    result = run(*args, "-o", str(tmp_path / "out"))
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_weights_that_do_not_fit(run, tmp_path):
    import torch

    from deploy_res.models import create_model

    ckpt = tmp_path / "w.pt"
    torch.save(create_model("resnet34").state_dict(), ckpt)
    result = run("export", "resnet18", "--weights", str(ckpt), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: weights w.pt do not fit the model: keys")


def test_unwritable_output_folder(run, tmp_path):
    (tmp_path / "f").write_text("")
    result = run("export", "resnet18", "-o", str(tmp_path / "f" / "x"))
    assert result.exit_code == 2 and "choose a writable -o/--output" in result.output


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt", "portable"])
def test_optimize_a_foreign_onnx_file(run, tmp_path, target):
    """An ONNX file straight from torch.onnx.export (BatchNorm kept, no manifest) goes through every target."""
    import json

    import onnx
    import torch

    from deploy_res.models import create_model

    source = tmp_path / "foreign.onnx"
    torch.onnx.export(create_model("resnet18").eval(), (torch.randn(1, 3, 64, 64),), str(source), dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(str(source)).graph.node)
    result = run("optimize", str(source), "-o", str(tmp_path / "out.onnx"), "--target", target)
    assert result.exit_code == 0, result.output
    optimized = onnx.load(str(tmp_path / "out.onnx"))
    assert not any(n.op_type == "BatchNormalization" for n in optimized.graph.node)
    assert ("com.microsoft" in {n.domain for n in optimized.graph.node}) == (target == "onnxruntime")
    manifest = json.loads((tmp_path / "out.onnx.json").read_text())
    assert manifest["stage"] == "optimize" and manifest["check"]["passes"]["target"] == target
    assert "fold_batchnorm" in result.output


def test_every_command_takes_h():
    """`-h` works for the group and every command (the README's promise), and shows the option types' metavars."""
    from deploy_res.cli import cli as group

    runner = CliRunner()
    assert runner.invoke(group, ["-h"]).exit_code == 0
    for name in group.commands:
        result = runner.invoke(group, [name, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, (name, result.output)
    assert "MIN,OPT,MAX" in runner.invoke(group, ["export", "-h"]).output


def test_the_command_line_starts_without_torch():
    """`deployres -h` and every command's option parsing run without importing torch (about 1.8 s here); the stages import it when they run."""
    import subprocess
    import sys

    code = "import sys, deploy_res.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
