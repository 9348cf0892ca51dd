"""OpenVINO engines: FP32 really FP32 and equal to ONNX Runtime, BF16 where the CPU has it, INT8 from the Q/DQ ONNX,
the precision run recorded, a foreign CPU recompiled with a note, ``--backend auto`` measured and recorded."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from deploy_res.build import BuildSettings, build_engine
from deploy_res.cli import cli
from deploy_res.core.errors import DeployResError
from deploy_res.engines import backend_of, load_engine
from deploy_res.engines.onnxruntime.backend import cpu_fingerprint
from deploy_res.engines.openvino import OpenVINOBackend, missing_bf16_isa
from deploy_res.engines.openvino.backend import cache_dir_of

pytestmark = pytest.mark.skipif(OpenVINOBackend().available() is not None, reason="OpenVINO is not installed")
BF16_MISSING = missing_bf16_isa()


def _manifest(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def _cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.mean(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from deploy_res.export import ExportSettings, export

    return export("resnet18", tmp_path_factory.mktemp("ov"), ExportSettings(input_size=(3, 64, 64), exporter="torchscript", optimize=False))


@pytest.fixture(scope="module")
def inputs(exported):
    from deploy_res.data.photos import sample_inputs
    from deploy_res.models import Preprocessing

    return sample_inputs(24, Preprocessing.from_dict(exported.manifest["preprocessing"]), seed=7).astype(np.float32)


@pytest.fixture(scope="module")
def reference(exported, inputs):
    return load_engine(exported.onnx_path).run({"input": inputs})["logits"]  # ONNX Runtime on the plain export


@pytest.fixture(scope="module")
def fp32_engine(exported, tmp_path_factory):
    return build_engine(exported.onnx_path, tmp_path_factory.mktemp("ov_fp32"), BuildSettings(backend="openvino"), quiet=True).engine


def test_fp32_engine_is_fp32_and_equals_onnxruntime(fp32_engine, inputs, reference):
    assert fp32_engine.name == "resnet18.fp32.cpu.ov.xml" and backend_of(fp32_engine) == "openvino"
    assert fp32_engine.with_suffix(".bin").is_file() and any(cache_dir_of(fp32_engine).iterdir())
    engine = _manifest(fp32_engine)["engine"]
    assert engine["cpu"] == cpu_fingerprint() and engine["openvino"] and engine["precision"] == "fp32"
    # OpenVINO would run BF16 on this CPU if not told: the hint is set, and every convolution runs in f32
    assert engine["precision_run"] == "fp32" and set(engine["runtime_precisions"]["convolution"]) == {"f32"}
    assert engine["runtime_precisions"]["inference_precision_hint"] == "f32"
    runner = load_engine(fp32_engine)
    assert runner.backend == "openvino" and runner.notes == []
    assert [(i.name, i.shape[1:], i.dtype) for i in runner.inputs] == [("input", (3, 64, 64), "float32")]
    assert runner.outputs[0].name == "logits" and runner.inputs[0].shape[0] is None  # dynamic batch kept
    assert runner.runtime_precisions()["convolution"].keys() == {"f32"}
    for batch in (1, 5, 24):
        np.testing.assert_allclose(runner.run({"input": inputs[:batch]})["logits"], reference[:batch], rtol=1e-3, atol=1e-3)


def test_streams_cut_a_batch_into_slices_run_at_once(fp32_engine, inputs, reference):
    one = load_engine(fp32_engine, threads=2)
    runner = load_engine(fp32_engine, threads=2, streams=2)
    assert len(runner.requests) == 2 and runner.settings["streams"] == 2
    assert runner.compiled.get_property("NUM_STREAMS") == 2
    assert one.compiled.get_property("NUM_STREAMS") == 1  # the latency hint: one stream
    for batch in (1, 2, 5, 24):  # odd sizes give uneven slices; one sample runs whole
        np.testing.assert_allclose(runner.run({"input": inputs[:batch]})["logits"], reference[:batch], rtol=1e-3, atol=1e-3)
    with pytest.raises(DeployResError, match="streams must be a positive integer"):
        load_engine(fp32_engine, streams=0)
    # the throughput hint picks its streams itself: the runner keeps a request for each
    hinted = load_engine(fp32_engine, threads=2, hint="throughput")
    assert len(hinted.requests) == hinted.compiled.get_property("NUM_STREAMS") >= 1


def test_foreign_cpu_is_recompiled_with_a_note(fp32_engine, inputs, reference):
    path = fp32_engine.with_name(fp32_engine.name + ".json")
    original = path.read_text()
    manifest = json.loads(original)
    manifest["engine"]["cpu"] = {"machine": "x86_64", "model": "Some Other CPU", "isa": ["avx2"]}
    path.write_text(json.dumps(manifest))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a note, not a warning
            runner = OpenVINOBackend().load(fp32_engine)
        assert len(runner.notes) == 1 and "Some Other CPU" in runner.notes[0] and "recompiling from its source ONNX" in runner.notes[0]
        np.testing.assert_allclose(runner.run({"input": inputs[:4]})["logits"], reference[:4], rtol=1e-3, atol=1e-3)
        (manifest.get("parent") or manifest["source"])["path"] = str(fp32_engine.parent / "gone.onnx")
        path.write_text(json.dumps(manifest))
        with pytest.raises(DeployResError, match="gone.onnx is gone; rebuild"):
            OpenVINOBackend().load(fp32_engine)
    finally:
        path.write_text(original)


@pytest.mark.skipif(BF16_MISSING is not None, reason=BF16_MISSING or "")
def test_bf16_engine_runs_bf16(exported, inputs, reference, tmp_path):
    result = CliRunner().invoke(cli, ["build-engine", str(exported.onnx_path), "--bf16", "--backend", "openvino", "--threads", "2", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    engine_path = tmp_path / "resnet18.bf16.cpu.ov.xml"
    engine = _manifest(engine_path)["engine"]
    assert engine["precision"] == "bf16" and engine["precision_run"] == "bf16" and engine["threads"] == 2 and engine["hint"] == "latency"
    out = load_engine(engine_path).run({"input": inputs})["logits"]
    assert not np.array_equal(out, reference)  # really reduced precision...
    assert _cosine(out, reference) > 0.999  # ...close to FP32


def test_bf16_refused_where_it_cannot_run(exported, tmp_path):
    result = CliRunner().invoke(cli, ["build-engine", str(exported.onnx_path), "--bf16", "--backend", "onnxruntime", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "--bf16 runs on OpenVINO" in result.output and "Traceback" not in result.output
    line = missing_bf16_isa({"machine": "x86_64", "model": "AVX2 CPU", "isa": ["avx", "avx2", "fma", "avx512_vnni"]})
    assert line and "\n" not in line and "avx512_bf16" in line and "amx_bf16" in line
    assert missing_bf16_isa({"machine": "x86_64", "model": "Zen 4", "isa": ["avx512_bf16"]}) is None


@pytest.fixture(scope="module")
def calib_npy(exported, tmp_path_factory):
    from deploy_res.data.photos import sample_inputs
    from deploy_res.models import Preprocessing

    path = tmp_path_factory.mktemp("ov_calib") / "calib.npy"
    np.save(path, sample_inputs(16, Preprocessing.from_dict(exported.manifest["preprocessing"]), seed=0))
    return path


def test_int8_engine_from_the_qdq_onnx(exported, calib_npy, inputs, reference, tmp_path):
    result = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="openvino", precision="int8", calib_data=calib_npy, calib_samples=16), quiet=True)
    assert result.precision_onnx.name == "resnet18.int8.onnxruntime.onnx"  # the layout OpenVINO runs fastest, shared with ORT
    manifest = _manifest(result.engine)
    assert (manifest.get("parent") or manifest["source"])["path"].endswith(result.precision_onnx.name)
    engine = manifest["engine"]
    assert engine["precision"] == "int8" and engine["precision_run"] == "int8"
    assert set(engine["runtime_precisions"]["convolution"]) <= {"u8", "i8"}
    out = load_engine(result.engine).run({"input": inputs})["logits"]
    ort_int8 = load_engine(result.precision_onnx).run({"input": inputs})["logits"]
    assert _cosine(out, reference) > 0.98 and _cosine(out, ort_int8) > 0.995


def test_openvino_per_layer_profile(fp32_engine):
    from deploy_res.profiling.layers import onnx_scopes, profile_openvino_layers

    runner = OpenVINOBackend().load(fp32_engine, perf_count=True)
    per_batch = profile_openvino_layers(runner, {2: {"input": np.zeros((2, 3, 64, 64), np.float32)}}, 2, onnx_scopes(fp32_engine))
    stages = {row["stage"] for row in per_batch[2]["by_stage"]}
    assert {"stem", "stage1", "stage4", "head"} <= stages and per_batch[2]["total_ms"] > 0
    assert any(row["op_type"] == "Convolution" for row in per_batch[2]["top_layers"])


def test_auto_measures_both_and_records_the_numbers(exported, tmp_path):
    from deploy_res.engines.tensorrt.backend import TensorRTBackend

    if TensorRTBackend().available() is None:
        pytest.skip("auto picks TensorRT here")
    result = build_engine(exported.onnx_path, tmp_path, BuildSettings(precision="fp32"), quiet=True)
    auto = _manifest(result.engine)["auto"]
    assert set(auto["images_per_s"]) == {"onnxruntime", "openvino"} and auto["chosen"] == result.backend
    speeds = {name: per["8"] for name, per in auto["images_per_s"].items()}
    assert speeds[auto["chosen"]] == max(speeds.values()) and all(v > 0 for v in speeds.values())
    assert any(note.startswith("auto: ") for note in result.notes)
    engines = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("resnet18.fp32.cpu."))
    assert engines == sorted([result.engine.name, result.engine.name + ".json"] + (
        [result.engine.with_suffix(".bin").name, cache_dir_of(result.engine).name] if result.backend == "openvino" else []))


def test_profile_reports_openvino_beside_onnxruntime(exported, fp32_engine, tmp_path):
    import deploy_res.profiling as profiling
    from deploy_res.reports.schema import validate

    ort_engine = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="onnxruntime"), quiet=True).engine
    settings = profiling.ProfileSettings(batches=(1, 2), warmup_s=0, iterations=2, layer_iterations=2, threads=2)
    report = profiling.profile([ort_engine, fp32_engine], settings, output_dir=tmp_path / "report")
    assert validate(report) == []
    ort, ov = report["artifacts"]
    assert (ort["backend"], ov["backend"]) == ("onnxruntime", "openvino") and ov["precision"] == "fp32" and ov["measured"]
    assert ov["layers"]["source"] == "openvino performance counters"
    assert {row["stage"] for row in ov["layers"]["batches"][0]["by_stage"]} >= {"stem", "stage1", "head"}


def test_validate_and_profile_run_a_plain_onnx_on_openvino(exported, tmp_path):
    """`--backend openvino` runs the plain export in OpenVINO: validated against PyTorch at FP32 limits, profiled beside ORT."""
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(exported.onnx_path), "--backend", "openvino", "--samples", "8", "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 0, result.output
    validation = json.loads((tmp_path / "v.json").read_text())
    assert validation["backend"] == "openvino" and validation["precision"] == "fp32" and validation["passed"]
    result = runner.invoke(cli, ["profile", str(exported.onnx_path), "--backend", "openvino", "--batches", "1", "--iterations", "2",
                                 "--warmup-s", "0", "--layer-iterations", "1", "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    [entry] = json.loads((tmp_path / "report" / "profile.json").read_text())["artifacts"]
    assert entry["backend"] == "openvino" and entry["measured"] and entry["layers"]["source"] == "openvino performance counters"


def test_an_engine_runs_only_on_its_own_backend(exported, tmp_path):
    engine = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="onnxruntime"), quiet=True).engine
    result = CliRunner().invoke(cli, ["validate", str(engine), "--backend", "openvino", "--samples", "4"])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "onnxruntime engine" in line and "--backend openvino is for plain ONNX files" in line


@pytest.mark.parametrize("claimed", ["bf16", "int8"])
def test_a_compiled_model_running_another_precision_than_claimed_is_refused(fp32_engine, claimed):
    """The load compares what OpenVINO really runs (the runtime graph's convolution precisions) with the manifest:
    an FP32 engine's compiled model is neither BF16 nor INT8 (on a CPU without BF16, a BF16 claim runs f32 with a
    note instead)."""
    from deploy_res.engines.openvino.backend import _check_runs_as_built

    with load_engine(fp32_engine) as runner:
        _check_runs_as_built(runner.compiled, "fp32", fp32_engine.name)  # what it was built as: no error
        if claimed == "bf16" and BF16_MISSING:
            _check_runs_as_built(runner.compiled, claimed, fp32_engine.name)
            return
        with pytest.raises(DeployResError, match=rf"manifest says precision {claimed} but OpenVINO runs resnet18.fp32.cpu.ov.xml's convolutions as \d+ f32"):
            _check_runs_as_built(runner.compiled, claimed, fp32_engine.name)
