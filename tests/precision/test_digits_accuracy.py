"""Accuracy on real labelled data: a ResNet trained on digits keeps its top-1 in INT8 and FP16.

Held-out top-1 on ONNX Runtime's CPU provider: INT8 from both Q/DQ emitters
(calibrated with the default method on 64 training digits, never on the
held-out ones) within 1 point of FP32; FP16 within 0.2 points.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from deploy_res.engines.precision.calibration import DEFAULT_METHOD, calibrate
from deploy_res.engines.precision.fp16 import convert_fp16
from deploy_res.engines.precision.qdq import emit_qdq
from deploy_res.engines.precision.qdq_check import check_tensorrt_qdq_placement
from precision_helpers import run_onnx

INT8_POINTS = 1.0
FP16_POINTS = 0.2


def _top1(model, x, y) -> float:
    return 100.0 * float(np.mean(run_onnx(model, x).argmax(1) == y))


@pytest.fixture(scope="module")
def fp32_top1(digits_model):
    top1 = _top1(digits_model.onnx_path, digits_model.test_x, digits_model.test_y)
    assert top1 == pytest.approx(100 * digits_model.torch_accuracy, abs=0.3)  # the export is faithful
    assert top1 > 90.0, "the digits network did not train"
    return top1


@pytest.mark.parametrize("layout", ["onnxruntime", "tensorrt"])
def test_int8_top1_within_one_point_of_fp32(digits_model, fp32_top1, layout):
    ranges = calibrate(digits_model.onnx_path, digits_model.train_x[:64], method=DEFAULT_METHOD, quiet=True)
    model = emit_qdq(onnx.load(str(digits_model.onnx_path)), ranges, layout)
    if layout == "tensorrt":
        assert check_tensorrt_qdq_placement(model) == []
    top1 = _top1(model, digits_model.test_x, digits_model.test_y)
    print(f"digits top-1: FP32 {fp32_top1:.2f}%, INT8 ({layout}) {top1:.2f}%")
    assert abs(top1 - fp32_top1) <= INT8_POINTS


def test_fp16_top1_within_two_tenths_of_a_point(digits_model, fp32_top1):
    top1 = _top1(convert_fp16(str(digits_model.onnx_path)), digits_model.test_x, digits_model.test_y)
    print(f"digits top-1: FP32 {fp32_top1:.2f}%, FP16 {top1:.2f}%")
    assert abs(top1 - fp32_top1) <= FP16_POINTS
