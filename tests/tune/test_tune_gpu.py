"""``deployres tune`` on a GPU with TensorRT: the TensorRT engines join the search beside the CPU ones, each judged
on accuracy first, and their serving points are instances on the GPU (one thread each), not cores.

Marked ``gpu``: skipped (with the reason) where there is no NVIDIA GPU or no TensorRT (see tests/engines/test_tensorrt_gpu.py
for the install line).
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli

pytestmark = pytest.mark.gpu


def test_tune_searches_tensorrt_engines_on_the_gpu(on_path, tmp_path):
    out = tmp_path / "out"
    result = run_cli("tune", *on_path.model_args(), "--precision", "fp32,fp16,int8", "--backend", "onnxruntime,tensorrt", "--cores", "2",
                     "--seconds", "0.5", "--harness", "in-process", "--p99-ms", "500", "-o", out, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "tune.json").read_text())
    engines = {e["name"]: e for e in report["engines"]}
    assert {"fp32-tensorrt", "fp16-tensorrt", "int8-tensorrt"} <= set(engines)
    assert all(engines[name]["outcome"] in ("pass", "fail", "inconclusive") for name in engines)
    gpu_points = [p for p in report["points"] if p["engine"].endswith("-tensorrt")]
    assert gpu_points, "no TensorRT engine passed on the digits, or none was served"
    assert all(p["serving"]["threads"] == 1 and p["serving"]["streams"] == 1 for p in gpu_points)
    assert report["chosen"]["judgement"]["meets"]
