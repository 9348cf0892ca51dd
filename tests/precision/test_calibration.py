"""Calibration: ranges from ORT's calibrators, the vectorised entropy search, and the never-stale cache."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from deploy_res.core.errors import DeployResError
from deploy_res.engines.precision import calibration, calibration_cache
from deploy_res.engines.precision.calibration import calibrate
from deploy_res.engines.precision.calibration_cache import Ranges
from deploy_res.engines.precision.entropy import entropy_threshold


@pytest.fixture(scope="module")
def calib_data(digits_model):
    return digits_model.train_x[:48]


def test_minmax_ranges_cover_every_conv_input_and_match_the_data(digits_model, calib_data):
    ranges = calibrate(digits_model.onnx_path, calib_data, method="minmax", quiet=True)
    model = onnx.load(str(digits_model.onnx_path))
    conv_inputs = {node.input[0] for node in model.graph.node if node.op_type in ("Conv", "Gemm")}
    assert conv_inputs <= set(ranges.tensors)
    low, high = ranges.tensors["input"]
    assert low == pytest.approx(float(calib_data.min())) and high == pytest.approx(float(calib_data.max()))
    assert ranges.method == "minmax" and not ranges.from_cache and ranges.key["samples"] == 48


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_clip_inside_the_minmax_range(digits_model, calib_data, method):
    minmax = calibrate(digits_model.onnx_path, calib_data, method="minmax", quiet=True)
    ranges = calibrate(digits_model.onnx_path, calib_data, method=method, quiet=True)
    assert set(ranges.tensors) == set(minmax.tensors)
    for name, (low, high) in ranges.tensors.items():
        mlow, mhigh = minmax.tensors[name]
        assert mlow - 1e-5 <= low <= high <= mhigh + 1e-5, name


def test_entropy_search_equals_onnxruntimes_loop():
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(0)
    for trial in range(4):
        collector = HistogramCollector("entropy", False, 512, 128, 99.999, "same")
        for _ in range(2):
            x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32) * (1 + trial)
            if trial % 2:
                x = np.maximum(x, 0)
            collector.collect_value({"t": x})
        hist = collector.histogram_dict["t"]
        expected = collector.get_entropy_threshold(hist, 128)
        got = entropy_threshold(hist[0], hist[1], float(hist[2]), float(hist[3]), 128)
        assert got == pytest.approx((float(expected[0]), float(expected[1])))


def test_cache_is_reused_only_when_every_key_field_matches(digits_model, calib_data, tmp_path):
    cache = tmp_path / "calib.json"
    first = calibrate(digits_model.onnx_path, calib_data, method="minmax", cache_path=cache, quiet=True)
    assert cache.is_file() and not first.from_cache
    again = calibrate(digits_model.onnx_path, calib_data, method="minmax", cache_path=cache, quiet=True)
    assert again.from_cache and again.tensors == first.tensors

    def key():
        return json.loads(cache.read_text())["key"]

    # different data (one sample changed) -> rebuilt, file now holds the new key
    changed = calib_data.copy()
    changed[0, 0, 0, 0] += 1.0
    rebuilt = calibrate(digits_model.onnx_path, changed, method="minmax", cache_path=cache, quiet=True)
    assert not rebuilt.from_cache and key()["data_sha256"] == calibration_cache.data_fingerprint(changed)
    # fewer samples, other method, other options, other batch -> rebuilt each time
    assert not calibrate(digits_model.onnx_path, changed[:40], method="minmax", cache_path=cache, quiet=True).from_cache
    assert not calibrate(digits_model.onnx_path, changed[:40], method="percentile", cache_path=cache, quiet=True).from_cache
    assert not calibrate(digits_model.onnx_path, changed[:40], method="percentile", options={"percentile": 99.9}, cache_path=cache, quiet=True).from_cache
    assert not calibrate(digits_model.onnx_path, changed[:40], method="percentile", options={"percentile": 99.9}, batch_size=4, cache_path=cache, quiet=True).from_cache
    assert calibrate(digits_model.onnx_path, changed[:40], method="percentile", options={"percentile": 99.9}, batch_size=4, cache_path=cache, quiet=True).from_cache
    # another model (same graph, one weight changed) -> rebuilt
    model = onnx.load(str(digits_model.onnx_path))
    weight = model.graph.initializer[0]
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] += 1.0
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    assert not calibrate(other, changed[:40], method="percentile", options={"percentile": 99.9}, batch_size=4, cache_path=cache, quiet=True).from_cache
    # other library versions -> rebuilt
    data = json.loads(cache.read_text())
    data["key"]["versions"]["onnxruntime"] = "0.0.1"
    cache.write_text(json.dumps(data))
    assert "versions" in calibration_cache.explain_cache_miss(cache, calibration_cache.cache_key(**_key_args(other, changed[:40])))
    assert not calibrate(other, changed[:40], method="percentile", options={"percentile": 99.9}, batch_size=4, cache_path=cache, quiet=True).from_cache
    # a corrupt cache is rebuilt, not trusted
    cache.write_text("{ not json")
    assert not calibrate(other, changed[:40], method="percentile", options={"percentile": 99.9}, batch_size=4, cache_path=cache, quiet=True).from_cache
    assert json.loads(cache.read_text())["key"]["samples"] == 40
    assert list(tmp_path.glob(".*.part")) == []


def _key_args(model_path, data):
    from deploy_res.core.records import sha256_file

    options = calibration.resolve_options("percentile", {"percentile": 99.9})
    return dict(model_sha256=sha256_file(model_path), method="percentile", options=options,
                data_sha256=calibration_cache.data_fingerprint(data), samples=len(data), batch_size=4)


def test_ranges_round_trip_through_json():
    ranges = Ranges("minmax", {}, {"a": (-1.5, 2.0), "b": (0.0, 3.25)}, {"k": 1})
    back = Ranges.from_json(json.loads(json.dumps(ranges.to_json())))
    assert back.tensors == ranges.tensors and back.amax("a") == 2.0 and back.amax("b") == 3.25
    assert set(ranges.to_ort_tensors_data().keys()) == {"a", "b"}


def test_bad_calibration_requests_fail_in_one_line(digits_model, calib_data, tmp_path):
    with pytest.raises(DeployResError, match="unknown calibration method"):
        calibrate(digits_model.onnx_path, calib_data, method="kl")
    with pytest.raises(DeployResError, match="no option 'bins'"):
        calibrate(digits_model.onnx_path, calib_data, method="entropy", options={"bins": 3})
    with pytest.raises(DeployResError, match="float64.*expects float32"):
        calibrate(digits_model.onnx_path, calib_data.astype(np.float64))
    with pytest.raises(DeployResError, match=r"shape \(4, 3, 8, 8\)"):
        calibrate(digits_model.onnx_path, np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(DeployResError, match="does not exist"):
        calibrate(tmp_path / "missing.onnx", calib_data)
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(DeployResError, match="not a readable ONNX"):
        calibrate(tmp_path / "broken.onnx", calib_data)
