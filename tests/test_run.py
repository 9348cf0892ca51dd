"""`deployres run` end to end on a small model: every stage's files, the verdicts and the report."""

from __future__ import annotations

import json

from click.testing import CliRunner

from deploy_res.cli import cli


def test_run_whole_pipeline_small(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "resnet18", "--int8", "--fp16", "-o", str(out), "--input-size", "3,64,64",
                                      "--exporter", "torchscript", "--calib-samples", "16", "--fallback-layers", "2", "--duration-s", "0.2", "--batches", "1,4",
                                      "--backend", "onnxruntime"],  # auto measures ORT against OpenVINO: tests/engines/test_openvino.py
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("resnet18.onnx", "resnet18.opt.onnx", "resnet18.fp32.cpu.ort.onnx", "resnet18.fp16.onnxruntime.onnx",
                 "resnet18.fp16.cpu.ort.onnx", "resnet18.int8.onnxruntime.onnx", "resnet18.int8.cpu.ort.onnx",
                 "resnet18.calib-percentile.json", "weights/resnet18.bn-photos.pth"):
        assert (out / name).is_file(), name
    assert len(list((out / "calib").iterdir())) == 16
    report = json.loads((out / "report" / "profile.json").read_text())
    labels = [a["label"] for a in report["artifacts"]]
    assert labels == ["resnet18.fp32.cpu.ort.onnx", "resnet18.fp16.cpu.ort.onnx", "resnet18.int8.cpu.ort.onnx", "torch eager"]
    assert all(a["measured"] and [b["batch"] for b in a["batches"]] == [1, 4] for a in report["artifacts"])
    assert (out / "report" / "profile.html").stat().st_size > 10_000
    for precision in ("fp32", "fp16", "int8"):
        assert f"{precision}: cosine" in result.output
    assert "report: " in result.output and "profile.html" in result.output
    verdict = json.loads((out / "resnet18.int8.cpu.ort.onnx.validation.json").read_text())
    assert verdict["passed"] and verdict["inputs"]["kind"] == "arrays" and verdict["inputs"]["samples"] == 128 and verdict["evidence"] == "unlabelled"
    assert "INT8 fallback: 2 layers in FP32" in result.output
    fallback = json.loads((out / "resnet18.int8.onnxruntime.onnx.json").read_text())["fallback"]
    assert len(fallback["fp32_layers"]) == 2 and fallback["latency_cost"] > 0
