"""The engine interface: ONNX Runtime engines built, loaded and checked; TensorRT refused cleanly here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from deploy_res.build import BuildSettings, build_engine
from deploy_res.core.names import model_stem
from deploy_res.cli import cli
from deploy_res.core.errors import DeployResError
from deploy_res.engines import get_backend, load_engine
from deploy_res.engines.onnxruntime.backend import OnnxRuntimeBackend, cpu_fingerprint
from deploy_res.engines.tensorrt.backend import TensorRTBackend


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from deploy_res.export import ExportSettings, export

    return export("resnet18", tmp_path_factory.mktemp("eng"), ExportSettings(input_size=(3, 64, 64), exporter="torchscript", optimize=False))


def test_model_stem():
    from pathlib import Path

    for name in ("resnet50.onnx", "resnet50.opt.onnx", "resnet50.tensorrt.opt.onnx", "resnet50.int8.onnxruntime.onnx"):
        assert model_stem(Path(name)) == "resnet50"


def test_auto_picks_onnxruntime_without_gpu():
    if TensorRTBackend().available() is None:
        pytest.skip("TensorRT can run here")
    assert get_backend("auto").name == "onnxruntime"


def test_tensorrt_refused_in_one_line(exported, tmp_path):
    if TensorRTBackend().available() is None:
        pytest.skip("TensorRT can run here")
    result = CliRunner().invoke(cli, ["build-engine", str(exported.onnx_path), "--backend", "tensorrt", "-o", str(tmp_path)])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: --backend tensorrt cannot run here:") and "--onnx-only" in line
    assert not any(tmp_path.iterdir())


def test_tensorrt_onnx_only_writes_standard_graph(exported, tmp_path):
    import onnx

    result = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="tensorrt", onnx_only=True), quiet=True)
    assert result.engine is None and result.backend == "tensorrt"
    model = onnx.load(str(result.precision_onnx))
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert not any(node.op_type == "BatchNormalization" for node in model.graph.node)


def test_onnxruntime_engine_build_load_and_parity(exported, tmp_path):
    result = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="onnxruntime"), quiet=True)
    assert result.engine.name == "resnet18.fp32.cpu.ort.onnx"
    manifest = json.loads(result.engine.with_name(result.engine.name + ".json").read_text())
    assert manifest["engine"]["cpu"] == cpu_fingerprint() and manifest["model"]["source"] == "resnet18"
    runner = load_engine(result.engine)
    assert runner.notes == [] and runner.inputs[0].name == "input"
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    import onnxruntime as ort

    expected = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(runner.run({"input": x})["logits"], expected, rtol=1e-4, atol=1e-4)


def test_engine_from_another_cpu_is_reoptimised(exported, tmp_path):
    result = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="onnxruntime"), quiet=True)
    manifest_path = result.engine.with_name(result.engine.name + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["engine"]["cpu"] = {"machine": "x86_64", "model": "Some Other CPU", "isa": ["avx2"]}
    manifest_path.write_text(json.dumps(manifest))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said as a note (printed and recorded by validate/profile), not a UserWarning
        runner = OnnxRuntimeBackend().load(result.engine)
    assert any("Some Other CPU" in note and "re-optimising" in note for note in runner.notes)
    out = runner.run({"input": np.zeros((1, 3, 64, 64), np.float32)})["logits"]
    assert out.shape == (1, 1000)


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage-not-onnx"])
def test_corrupt_onnx_is_one_line(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["build-engine", str(path), "--backend", "onnxruntime"])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_truncated_onnx_is_one_line(exported, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(exported.onnx_path.read_bytes()[:100_000])
    result = CliRunner().invoke(cli, ["build-engine", str(path), "--backend", "onnxruntime"])
    assert result.exit_code == 2 and "is not an ONNX file" in result.output


def test_fp16_and_int8_together_refused(exported):
    result = CliRunner().invoke(cli, ["build-engine", str(exported.onnx_path), "--fp16", "--int8"])
    assert result.exit_code == 2 and "choose one" in result.output


def test_int8_without_calibration_data(exported):
    with pytest.raises(DeployResError, match="--int8 needs --calib-data"):
        BuildSettings(backend="onnxruntime", precision="int8")


@pytest.fixture(scope="module")
def calib_npy(exported, tmp_path_factory):
    from deploy_res.data.photos import sample_inputs
    from deploy_res.models import Preprocessing

    path = tmp_path_factory.mktemp("calib") / "calib.npy"
    np.save(path, sample_inputs(16, Preprocessing.from_dict(exported.manifest["preprocessing"]), seed=0))
    return path


def test_tensorrt_onnx_only_int8_obeys_placement_rules(exported, calib_npy, tmp_path):
    from deploy_res.engines.precision.qdq_check import check_tensorrt_qdq_placement

    result = CliRunner().invoke(cli, ["build-engine", str(exported.onnx_path), "--backend", "tensorrt", "--onnx-only", "--int8",
                                      "--calib-data", str(calib_npy), "--calib-samples", "16", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    qdq = tmp_path / "resnet18.int8.tensorrt.onnx"
    assert check_tensorrt_qdq_placement(qdq) == []
    fp16 = CliRunner().invoke(cli, ["build-engine", str(exported.onnx_path), "--backend", "tensorrt", "--onnx-only", "--fp16", "-o", str(tmp_path)])
    assert fp16.exit_code == 0, fp16.output
    import onnx

    model = onnx.load(str(tmp_path / "resnet18.fp16.tensorrt.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stay FP32


def test_second_int8_build_reuses_the_calibration_cache(exported, calib_npy, tmp_path):
    args = ["build-engine", str(exported.onnx_path), "--backend", "onnxruntime", "--int8", "--calib-data", str(calib_npy),
            "--calib-samples", "16", "-o", str(tmp_path)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "wrote calibration cache" in first.output, first.output
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and "reused calibration cache" in second.output, second.output
    third = CliRunner().invoke(cli, args[:-2] + ["--calib-method", "minmax", "-o", str(tmp_path)])
    assert third.exit_code == 0 and "wrote calibration cache" in third.output  # another method: another cache


def test_fewer_calibration_samples_than_asked(exported, calib_npy, tmp_path):
    result = CliRunner().invoke(cli, ["build-engine", str(exported.onnx_path), "--backend", "onnxruntime", "--int8",
                                      "--calib-data", str(calib_npy), "--calib-samples", "64", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "error:" in result.output
    assert not list(tmp_path.glob("*.int8.*")) and not list(tmp_path.glob("*.calib-*"))
