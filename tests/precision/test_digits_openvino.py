"""OpenVINO engines on the digits-trained ResNet pass the same default limits as ONNX Runtime's: FP32, INT8 and
(where the CPU has native BF16, else skipped with the reason) BF16, validated by ``deployres validate`` against
the PyTorch original on the labelled held-out digits."""

from __future__ import annotations

import json
import re

import pytest
from cli_helpers import run_cli

from deploy_res.engines.openvino import OpenVINOBackend, missing_bf16_isa

pytestmark = pytest.mark.skipif(OpenVINOBackend().available() is not None, reason="OpenVINO is not installed")


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_openvino_engine_passes_default_limits(digits_model, digits_folder, monkeypatch, precision):
    if precision == "bf16" and missing_bf16_isa():
        pytest.skip(missing_bf16_isa())
    monkeypatch.syspath_prepend(str(digits_folder))
    out = digits_folder / "out"
    if not (out / "digits_resnet.onnx").is_file():
        result = run_cli("export", "digits_net:digits_resnet", "--weights", digits_model.weights_path, "--input-size", "3,24,24",
                         "--exporter", "torchscript", "--no-optimize", "-o", out, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    args = ["build-engine", out / "digits_resnet.onnx", "--backend", "openvino", "-o", out]
    if precision != "fp32":
        args.append(f"--{precision}")
    if precision == "int8":
        args += ["--calib-data", digits_folder / "calib.npz", "--calib-samples", "256"]
    built = run_cli(*args, catch_exceptions=False)
    assert built.exit_code == 0, built.output
    engine = out / f"digits_resnet.{precision}.cpu.ov.xml"
    assert json.loads((out / (engine.name + ".json")).read_text())["engine"]["precision_run"] == precision
    result = run_cli("validate", engine, "--data", digits_folder / "heldout.npz", "--samples", len(digits_model.test_y),
                     "--json", out / f"{precision}.validation.json", catch_exceptions=False)
    assert result.exit_code == 0, result.output  # every default limit of the precision passed
    line = next(l for l in result.output.splitlines() if l.startswith("top-1 accuracy:"))
    reference, artifact, drop = (float(v) for v in re.findall(r"([-\d.]+)%?", line.split(":", 1)[1])[:3])
    assert reference > 90 and abs(drop) <= (1.0 if precision == "int8" else 0.5), line
