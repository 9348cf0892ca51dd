"""OpenVINO engines on the digits-trained ResNet pass the same default limits as ONNX Runtime's: FP32, INT8 and
(where the CPU has native BF16, else skipped with the reason) BF16, validated by ``deployres validate`` against
the PyTorch original on the labelled held-out digits."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from deploy_res.cli import cli
from deploy_res.engines.openvino import OpenVINOBackend, missing_bf16_isa

pytestmark = pytest.mark.skipif(OpenVINOBackend().available() is not None, reason="OpenVINO is not installed")


@pytest.fixture(scope="module")
def digits_export(digits_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits_openvino")
    (folder / "digits_ov_net.py").write_text(textwrap.dedent("""
        from deploy_res.models.resnet import BasicBlock, ResNet

        def digits_resnet():
            return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    """))
    np.savez(folder / "calib.npz", inputs=digits_model.train_x[:256])
    np.savez(folder / "heldout.npz", inputs=digits_model.test_x, labels=digits_model.test_y)
    return folder


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_openvino_engine_passes_default_limits(digits_model, digits_export, monkeypatch, precision):
    if precision == "bf16" and missing_bf16_isa():
        pytest.skip(missing_bf16_isa())
    monkeypatch.syspath_prepend(str(digits_export))
    out = digits_export / "out"
    if not (out / "digits_resnet.onnx").is_file():
        result = _invoke("export", "digits_ov_net:digits_resnet", "--weights", digits_model.weights_path, "--input-size", "3,24,24",
                         "--exporter", "torchscript", "--no-optimize", "-o", out)
        assert result.exit_code == 0, result.output
    args = ["build-engine", out / "digits_resnet.onnx", "--backend", "openvino", "-o", out]
    if precision != "fp32":
        args.append(f"--{precision}")
    if precision == "int8":
        args += ["--calib-data", digits_export / "calib.npz", "--calib-samples", "256"]
    built = _invoke(*args)
    assert built.exit_code == 0, built.output
    engine = out / f"digits_resnet.{precision}.cpu.ov.xml"
    assert json.loads((out / (engine.name + ".json")).read_text())["engine"]["precision_run"] == precision
    result = _invoke("validate", engine, "--data", digits_export / "heldout.npz", "--samples", len(digits_model.test_y),
                     "--json", out / f"{precision}.validation.json")
    assert result.exit_code == 0, result.output  # every default limit of the precision passed
    line = next(l for l in result.output.splitlines() if l.startswith("top-1 accuracy:"))
    reference, artifact, drop = (float(v) for v in re.findall(r"([-\d.]+)%?", line.split(":", 1)[1])[:3])
    assert reference > 90 and abs(drop) <= (1.0 if precision == "int8" else 0.5), line
