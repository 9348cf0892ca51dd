"""The whole pipeline on a really trained network: validate prints real top-1 accuracy for FP32, FP16 and INT8.

The digits-trained ResNet is exported through ``package.module:factory`` with
its checkpoint, so ``deployres validate`` rebuilds the PyTorch original from
the manifest and compares on the labelled held-out digits (an ``.npz`` with
``labels``).
"""

from __future__ import annotations

import re

import pytest
from cli_helpers import run_cli


def test_validate_shows_real_accuracy_for_every_precision(digits_model, digits_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(digits_folder))
    out = digits_folder / "out"
    result = run_cli("export", "digits_net:digits_resnet", "--weights", digits_model.weights_path, "--input-size", "3,24,24",
                     "--exporter", "torchscript", "--no-optimize", "-o", out, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    engines = {}
    for flag in ("", "--fp16", "--int8"):
        args = ["build-engine", out / "digits_resnet.onnx", "--backend", "onnxruntime", "-o", out]
        if flag:
            args.append(flag)
        if flag == "--int8":
            args += ["--calib-data", digits_folder / "calib.npz", "--calib-samples", "256"]
        built = run_cli(*args, catch_exceptions=False)
        assert built.exit_code == 0, built.output
        engines[flag or "fp32"] = re.findall(r"wrote (\S+\.ort\.onnx)", built.output)[-1]
    for precision, engine in engines.items():
        result = run_cli("validate", engine, "--data", digits_folder / "heldout.npz", "--samples", len(digits_model.test_y), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        line = next(l for l in result.output.splitlines() if l.startswith("top-1 accuracy:"))
        reference, artifact, drop = (float(v) for v in re.findall(r"([-\d.]+)%?", line.split(":", 1)[1])[:3])
        assert reference == pytest.approx(100 * digits_model.torch_accuracy, abs=0.01)  # printed with 2 decimals
        assert reference > 90 and abs(drop) <= 1.0, line
