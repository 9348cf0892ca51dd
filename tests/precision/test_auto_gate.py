"""``--backend auto`` for INT8 on the digits ResNet trained here: every candidate is judged by the validation verdict
against the FP32 graph before it is timed, and one that fails its limits is never chosen, however fast it is."""

from __future__ import annotations

import json

import pytest
from precision_helpers import damage

from cli_helpers import run_cli
from deploy_res.engines import unavailable


pytestmark = pytest.mark.skipif(unavailable("openvino") is not None or unavailable("tensorrt") is None,
                                reason="auto compares ONNX Runtime with OpenVINO only on a CPU with both")


def _build_auto(digits_model, digits_folder, out):
    return run_cli("build-engine", digits_model.onnx_path, "--int8", "--calib-data", digits_folder / "calib.npz", "--calib-samples", "256",
                   "-o", out, catch_exceptions=False)


def _auto(out):
    (manifest,) = [json.loads(p.read_text()) for p in out.glob("*.int8.cpu.*.json") if "auto" in json.loads(p.read_text())]
    return manifest["auto"]


def test_both_good_candidates_are_judged_then_timed(digits_model, digits_folder, tmp_path):
    result = _build_auto(digits_model, digits_folder, tmp_path)
    assert result.exit_code == 0, result.output
    auto = _auto(tmp_path)
    assert set(auto["accuracy"]) == {"onnxruntime", "openvino"}
    for verdict in auto["accuracy"].values():
        assert verdict["outcome"] == "pass" and verdict["samples"] == 256 and verdict["evidence"] == "unlabelled"
    assert set(auto["images_per_s"]) == {"onnxruntime", "openvino"}
    assert "auto: onnxruntime PASS" in result.output and "auto: openvino PASS" in result.output


def test_a_failing_candidate_is_removed_and_never_timed(digits_model, digits_folder, tmp_path, monkeypatch):
    """The OpenVINO candidate is compiled from the Q/DQ graph with its last convolution's weight scales x4: it must lose."""
    import onnx

    from deploy_res.engines.openvino.backend import OpenVINOBackend

    build = OpenVINOBackend.build

    def damaged_build(self, onnx_path, engine_path, settings):
        broken = tmp_path / "damaged.int8.onnx"
        onnx.save(damage(onnx.load(str(onnx_path)), 4.0), str(broken))
        return build(self, broken, engine_path, settings)

    monkeypatch.setattr(OpenVINOBackend, "build", damaged_build)
    result = _build_auto(digits_model, digits_folder, tmp_path)
    assert result.exit_code == 0, result.output
    auto = _auto(tmp_path)
    assert auto["chosen"] == "onnxruntime" and "images_per_s" not in auto
    assert auto["accuracy"]["openvino"]["outcome"] == "fail" and auto["accuracy"]["onnxruntime"]["outcome"] == "pass"
    assert "auto: openvino removed: it fails the int8 limits, so it is not timed" in result.output
    assert not list(tmp_path.glob("*.int8.cpu.openvino*")) and not list(tmp_path.glob("*.openvino.xml"))
