"""ResNet-50 INT8 against FP32 on real photos, both Q/DQ emitters, ONNX Runtime CPU (and OpenVINO on the ``onnxruntime`` layout).

The network has random weights with BatchNorm statistics re-estimated on 32
random crops of scikit-image's photos; it is calibrated (default method) on
32 other crops and compared on 64 more, never seen before: mean logit cosine
and top-1 agreement with the FP32 ONNX.

Two variants, because the first one is chaotic:

* ``torchvision init`` -- exactly the registry's ResNet-50 (every residual
  branch's last BatchNorm has gain 1). Untrained, it amplifies any
  perturbation about 3x per stage: Gaussian noise of 0.1% of the input's
  std changes the logits by 2.7% (1 - cosine = 5e-4). INT8 cannot reach
  cosine 0.99 on it with any calibration: the input's own int8 rounding alone
  costs 0.005 and per-channel int8 weights alone (no activation
  quantisation) reach 0.991. Measured: 0.983 (onnxruntime emitter) and 0.985
  (tensorrt emitter) with percentile, 0.983 / 0.983 with minmax; the test
  holds the floor at 0.98.
* ``residual gain 0.25`` -- the same network with each residual branch's
  last BatchNorm gain set to 0.25 before the statistics are re-estimated.
  Training shrinks these gains (which is why zero-initialising them is a
  common recipe); with them small the network stops amplifying noise (0.1%
  input noise: 1 - cosine = 2e-6 at gain 0.2) and INT8 meets the issue's
  target of 0.99 (measured gain 0.5: 0.991 / 0.993; 0.2: 0.996 / 0.998).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import onnx
import pytest

from deploy_res.engines.precision.calibration import DEFAULT_METHOD, calibrate
from deploy_res.engines.precision.qdq import emit_qdq
from deploy_res.engines.precision.qdq_check import check_tensorrt_qdq_placement
from precision_helpers import EXPORT_KW, mean_cosine, run_onnx

pytestmark = pytest.mark.slow

BN_SAMPLES, CALIB_SAMPLES, EVAL_SAMPLES = 32, 32, 64
VARIANTS = {"torchvision init": (None, 0.98), "residual gain 0.25": (0.25, 0.99)}


@pytest.fixture(scope="module")
def crops():
    from deploy_res.data.photos import sample_inputs
    from deploy_res.models import get_spec

    pre = get_spec("resnet50").preprocessing
    return {"bn": sample_inputs(BN_SAMPLES, pre, seed=100), "calib": sample_inputs(CALIB_SAMPLES, pre, seed=1),
            "eval": sample_inputs(EVAL_SAMPLES, pre, seed=2)}


def _resnet50_onnx(folder, bn_inputs, residual_gain):
    import torch

    from deploy_res.models import create_model
    from deploy_res.models.bn_recalibration import recalibrate_batchnorm, shrink_residual_gains

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = create_model("resnet50").eval()
        if residual_gain is not None:
            assert shrink_residual_gains(model, residual_gain) == 16
        recalibrate_batchnorm(model, bn_inputs)
        path = folder / "resnet50.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, torch.from_numpy(bn_inputs[:1]), str(path), **EXPORT_KW)
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_int8_logits_follow_fp32_for_both_emitters(tmp_path, crops, variant):
    gain, floor = VARIANTS[variant]
    path = _resnet50_onnx(tmp_path, crops["bn"], gain)
    reference = run_onnx(path, crops["eval"], batch=16)
    start = time.perf_counter()
    ranges = calibrate(path, crops["calib"], method=DEFAULT_METHOD, quiet=True)
    calibration_s = time.perf_counter() - start
    model = onnx.load(str(path))
    results = {}
    for layout in ("onnxruntime", "tensorrt"):
        qdq = emit_qdq(model, ranges, layout)
        if layout == "tensorrt":
            assert check_tensorrt_qdq_placement(qdq) == []
        out = run_onnx(qdq, crops["eval"], batch=16)
        results[layout] = (mean_cosine(out, reference), float(np.mean(out.argmax(1) == reference.argmax(1))))
        if layout == "onnxruntime" and gain is not None:  # OpenVINO's INT8 engine is built from this very file
            out = _run_openvino(qdq, tmp_path / "resnet50.int8.onnxruntime.onnx", crops["eval"])
            results["openvino"] = (mean_cosine(out, reference), float(np.mean(out.argmax(1) == reference.argmax(1))))
    summary = ", ".join(f"{t}: cosine {c:.4f}, top-1 agreement {a:.2f}" for t, (c, a) in results.items())
    print(f"ResNet-50 ({variant}), {DEFAULT_METHOD} calibration {calibration_s:.1f} s; {summary}")
    for layout, (cosine, _) in results.items():
        assert cosine >= floor, f"{layout}: INT8 mean logit cosine {cosine:.4f} < {floor} ({summary})"


def _run_openvino(qdq: onnx.ModelProto, path, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    """The Q/DQ ONNX compiled by OpenVINO (its INT8 kernels), through deployres' OpenVINO backend."""
    from deploy_res.engines import get_backend

    onnx.save(qdq, str(path))
    with get_backend("openvino").load(path, threads=2) as runner:
        name, output = runner.inputs[0].name, runner.outputs[0].name
        return np.concatenate([runner.run({name: inputs[i:i + batch]})[output] for i in range(0, len(inputs), batch)])
