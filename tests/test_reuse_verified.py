"""Nothing reused is trusted on its manifest's word: prepared graphs, calibration caches, checkpoints and
engines are checked against the sha256 recorded for them, then rebuilt or refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import one_error_line, run_cli
from graph_builders import conv_bn

from deploy_res.core.manifest import manifest_path
from deploy_res.core.records import matches_record
from deploy_res.core.manifest import read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.engines.precision import calibration_cache
from deploy_res.engines.precision.calibration import calibrate

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """resnet18 exported at 32x32 from a checkpoint (raw + optimised for onnxruntime), in its own folder."""
    from deploy_res.export import ExportSettings, export
    from deploy_res.loading import load_model

    folder = tmp_path_factory.mktemp("reuse")
    weights = folder / "resnet18.pth"
    torch.save(load_model("resnet18", init_seed=1).module.state_dict(), weights)
    return export("resnet18", folder, ExportSettings(weights=weights, input_size=SIZE, exporter="torchscript"))


@pytest.fixture(scope="module")
def ort_engine(exported, tmp_path_factory):
    from deploy_res.build import BuildSettings, build_engine

    return build_engine(exported.optimized_path, tmp_path_factory.mktemp("engine"), BuildSettings(backend="onnxruntime"), quiet=True).engine


def _copy(path, folder):
    shutil.copy(path, folder / path.name)
    shutil.copy(manifest_path(path), manifest_path(folder / path.name))
    return folder / path.name


# ---------------------------------------------------------------- prepared graphs


@pytest.mark.parametrize("damage", ["another_model", "truncated"])
def test_tampered_prepared_graph_is_rebuilt(exported, tmp_path, damage):
    args = ["build-engine", exported.onnx_path, "--backend", "onnxruntime", "--fp16", "--onnx-only", "-o", tmp_path]
    assert run_cli(*args).exit_code == 0
    prepared = tmp_path / "resnet18.portable.opt.onnx"
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(prepared)).graph.node)
    if damage == "another_model":
        onnx.save(conv_bn(), str(prepared))  # another network, the manifest left as it was
    else:
        prepared.write_bytes(prepared.read_bytes()[:5000])
    result = run_cli(*args)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "resnet18.portable.opt.onnx differs from the sha256 its manifest recorded: rebuilt it" in result.output
    assert matches_record(prepared, read_manifest(prepared)["artifact"])
    assert sum(n.op_type == "Conv" for n in onnx.load(str(prepared)).graph.node) == convs
    fp16 = onnx.load(str(tmp_path / "resnet18.fp16.onnxruntime.onnx"))
    assert sum(n.op_type == "Conv" for n in fp16.graph.node) == convs  # the engine's ONNX is resnet18's, not the impostor's


def test_untouched_prepared_graph_is_reused(exported, tmp_path):
    args = ["build-engine", exported.onnx_path, "--backend", "onnxruntime", "--fp16", "--onnx-only", "-o", tmp_path]
    assert run_cli(*args).exit_code == 0
    before = (tmp_path / "resnet18.portable.opt.onnx").stat().st_mtime_ns
    second = run_cli(*args)
    assert second.exit_code == 0 and "rebuilt" not in second.output
    assert (tmp_path / "resnet18.portable.opt.onnx").stat().st_mtime_ns == before


def test_tampered_optimised_input_is_refused_in_one_line(exported, tmp_path):
    copy = _copy(exported.optimized_path, tmp_path)
    onnx.save(conv_bn(), str(copy))
    line = one_error_line(run_cli("build-engine", copy, "--backend", "onnxruntime", "-o", tmp_path / "out"))
    assert str(copy) in line and "sha256" in line
    copy.write_bytes(exported.optimized_path.read_bytes()[:3000])  # truncated: still one line, no protobuf traceback
    line = one_error_line(run_cli("build-engine", copy, "--backend", "onnxruntime", "-o", tmp_path / "out"))
    assert "Traceback" not in line


def test_raw_export_behind_an_optimised_input_is_verified(exported, tmp_path):
    copy = _copy(exported.optimized_path, tmp_path)
    raw = tmp_path / "raw.onnx"
    onnx.save(conv_bn(), str(raw))
    manifest = json.loads(manifest_path(copy).read_text())
    for record in (manifest["parent"], manifest["inputs"]["onnx"]):  # the link, as schema 2 and 1 spell it
        record["path"] = str(raw)  # names a file that is not what it was optimised from
    manifest_path(copy).write_text(json.dumps(manifest))
    line = one_error_line(run_cli("build-engine", copy, "--backend", "onnxruntime", "--fp16", "--onnx-only", "-o", tmp_path / "out"))
    assert "raw export" in line and str(raw) in line and "sha256" in line


# ---------------------------------------------------------------- calibration cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(conv_bn(channels=8), str(path))
    data = np.random.default_rng(0).standard_normal((16, 8, 6, 6)).astype(np.float32)
    return path, data


def _edit_cache(cache, change, forge_digest=False):
    data = json.loads(cache.read_text())
    change(data["ranges"])
    if forge_digest:
        data["sha256"] = calibration_cache.content_digest(data)
    cache.write_text(json.dumps(data))


def test_cache_carries_a_digest_over_its_content(tiny, tmp_path):
    path, data = tiny
    cache = tmp_path / "calib.json"
    first = calibrate(path, data, method="minmax", cache_path=cache, quiet=True)
    stored = json.loads(cache.read_text())
    assert stored["sha256"] == calibration_cache.content_digest(stored) and stored["schema"] == calibration_cache.CACHE_SCHEMA
    assert calibrate(path, data, method="minmax", cache_path=cache, quiet=True).from_cache
    # ranges edited x1000: the digest no longer holds, the ranges are recomputed
    _edit_cache(cache, lambda ranges: [pair.__setitem__(1, pair[1] * 1000) for pair in ranges.values()])
    assert "sha256 check" in calibration_cache.explain_cache_miss(cache, first.key)
    again = calibrate(path, data, method="minmax", cache_path=cache, quiet=True)
    assert not again.from_cache and "sha256 check" in again.replaced and again.tensors == first.tensors
    assert calibrate(path, data, method="minmax", cache_path=cache, quiet=True).from_cache


@pytest.mark.parametrize("bad, message", [((float("nan"), 1.0), "non-finite"), ((0.0, float("inf")), "non-finite"), ((2.0, -2.0), "inverted")])
def test_cache_with_unusable_ranges_is_recomputed_even_with_a_forged_digest(tiny, tmp_path, bad, message):
    path, data = tiny
    cache = tmp_path / "calib.json"
    first = calibrate(path, data, method="minmax", cache_path=cache, quiet=True)
    name = next(iter(first.tensors))
    _edit_cache(cache, lambda ranges: ranges.__setitem__(name, list(bad)), forge_digest=True)
    again = calibrate(path, data, method="minmax", cache_path=cache, quiet=True)
    assert not again.from_cache and message in again.replaced and again.tensors == first.tensors


def test_non_finite_calibration_data_is_one_line_not_a_scale_assertion(tiny, tmp_path):
    path, data = tiny
    bad = data.copy()
    bad[3, 0, 0, 0] = np.inf  # MinMax passes it through into the ranges
    with pytest.raises(DeployResError, match="non-finite range") as info:
        calibrate(path, bad, method="minmax", cache_path=tmp_path / "calib.json", quiet=True)
    assert "\n" not in str(info.value) and not (tmp_path / "calib.json").exists()


def test_build_engine_says_a_tampered_cache_was_recomputed(tiny, tmp_path):
    path, data = tiny
    source = tmp_path / "tiny.onnx"
    shutil.copy(path, source)
    np.save(tmp_path / "calib.npy", data)
    args = ["build-engine", source, "--backend", "onnxruntime", "--int8", "--onnx-only", "--calib-data", tmp_path / "calib.npy",
            "--calib-samples", "16", "--calib-method", "minmax", "-o", tmp_path / "out"]
    assert run_cli(*args).exit_code == 0
    cache = tmp_path / "out" / "tiny.calib-minmax.json"
    _edit_cache(cache, lambda ranges: [pair.__setitem__(1, pair[1] * 1000) for pair in ranges.values()])
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "fails its sha256 check" in result.output and "recomputed" in result.output
    calib = json.loads(manifest_path(tmp_path / "out" / "tiny.int8.onnxruntime.onnx").read_text())["calibration"]
    assert calib["cache_hit"] is False and "sha256" in calib["cache_replaced"]
    assert "reused calibration cache" in run_cli(*args).output


@pytest.mark.parametrize("asked", ["auto", "first_layer", "none"])
def test_an_int8_build_records_its_overflow_fix_and_auto_follows_this_cpu(tiny, tmp_path, asked):
    import onnx
    from onnx import numpy_helper

    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint
    from deploy_res.engines.precision.qdq import overflow_fix_for

    path, data = tiny
    np.save(tmp_path / "calib.npy", data)
    result = run_cli("build-engine", path, "--backend", "onnxruntime", "--int8", "--onnx-only", "--calib-data", tmp_path / "calib.npy",
                     "--calib-samples", "16", "--overflow-fix", asked, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    qdq = tmp_path / "out" / "tiny.int8.onnxruntime.onnx"
    settings = json.loads(manifest_path(qdq).read_text())["settings"]
    expected = overflow_fix_for(cpu_fingerprint()["isa"]) if asked == "auto" else asked
    assert settings["overflow_fix"] == expected and settings["overflow_fix_why"]
    assert ("7 bits" in result.output) == (expected == "first_layer")
    model = onnx.load(str(qdq))
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in model.graph.node if first_conv.input[1] in n.output)
    weights = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == weight_dq.input[0]))
    assert np.abs(weights).max() == (64 if expected == "first_layer" else 127)


# ---------------------------------------------------------------- checkpoints and engines


def test_validate_refuses_a_changed_checkpoint_in_one_line(exported, tmp_path):
    from deploy_res.export import ExportSettings, export
    from deploy_res.loading import load_model

    weights = tmp_path / "w.pth"
    torch.save(load_model("resnet18", init_seed=2).module.state_dict(), weights)
    result = export("resnet18", tmp_path, ExportSettings(weights=weights, input_size=SIZE, exporter="torchscript", optimize=False))
    assert run_cli("validate", result.onnx_path, "--samples", 2).exit_code == 0
    torch.save(load_model("resnet18", init_seed=5).module.state_dict(), weights)  # same keys, other numbers
    line = one_error_line(run_cli("validate", result.onnx_path, "--samples", 2))
    assert f"checkpoint {weights}" in line and "sha256" in line and "FAILED" not in line
    # profile --torch rebuilds the same reference: the torch entry is not measured, and says why
    profiled = run_cli("profile", result.onnx_path, "--torch", "--torch-modes", "eager", "--iterations", 1, "--batches", 1,
                    "--warmup-s", 0, "--layer-iterations", 0, "-o", tmp_path / "report")
    assert profiled.exit_code == 0, profiled.output
    rows = json.loads((tmp_path / "report" / "profile.json").read_text())["artifacts"]
    torch_row = next(row for row in rows if row["kind"] == "torch")
    assert not torch_row["measured"] and f"checkpoint {weights}" in torch_row["error"] and "sha256" in torch_row["error"]


def test_engine_that_differs_from_its_manifest_is_refused(ort_engine, exported, tmp_path):
    engine = _copy(ort_engine, tmp_path)
    engine.write_bytes(exported.onnx_path.read_bytes())  # a loadable ONNX, but not the engine the manifest describes
    line = one_error_line(run_cli("validate", engine, "--samples", 2))
    assert f"engine {engine}" in line and "sha256" in line and "build-engine" in line
    profiled = run_cli("profile", engine, "--iterations", 1, "--batches", 1, "--warmup-s", 0, "--layer-iterations", 0, "-o", tmp_path / "report")
    line = one_error_line(profiled)
    assert "nothing was measured" in line and "sha256" in line


def test_engine_from_another_cpu_is_a_printed_and_recorded_note(ort_engine, tmp_path):
    import warnings

    engine = _copy(ort_engine, tmp_path)
    manifest = json.loads(manifest_path(engine).read_text())
    manifest["engine"]["cpu"] = {"machine": "x86_64", "model": "Some Other CPU", "isa": ["avx2"]}
    manifest_path(engine).write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a note, not a Python UserWarning
        result = run_cli("validate", engine, "--samples", 2, "--json", tmp_path / "v.json")
        assert result.exit_code == 0, result.output
        assert "Some Other CPU" in result.output and "re-optimising" in result.output
        assert any("Some Other CPU" in note for note in json.loads((tmp_path / "v.json").read_text())["notes"])
        profiled = run_cli("profile", engine, "--iterations", 1, "--batches", 1, "--warmup-s", 0, "--layer-iterations", 0, "-o", tmp_path / "report")
    assert profiled.exit_code == 0, profiled.output
    assert "re-optimising" in profiled.output
    row = json.loads((tmp_path / "report" / "profile.json").read_text())["artifacts"][0]
    assert any("Some Other CPU" in note for note in row["notes"])


def test_engine_from_another_cpu_with_a_changed_source_is_refused(ort_engine, exported, tmp_path):
    engine = _copy(ort_engine, tmp_path)
    source = tmp_path / "source.onnx"
    onnx.save(conv_bn(), str(source))
    manifest = json.loads(manifest_path(engine).read_text())
    manifest["engine"]["cpu"] = {"machine": "x86_64", "model": "Some Other CPU", "isa": ["avx2"]}
    manifest["source"]["path"] = str(source)  # recorded sha256 is the real source's
    manifest_path(engine).write_text(json.dumps(manifest))
    line = one_error_line(run_cli("validate", engine, "--samples", 2))
    assert f"engine source {source}" in line and "sha256" in line


def test_per_layer_sources_are_verified(tiny, tmp_path):
    from deploy_res.validation.sensitivity import qdq_sources

    path, data = tiny
    source = tmp_path / "tiny.onnx"
    shutil.copy(path, source)
    np.save(tmp_path / "calib.npy", data)
    result = run_cli("build-engine", source, "--backend", "onnxruntime", "--int8", "--calib-data", tmp_path / "calib.npy",
                  "--calib-samples", "16", "--calib-method", "minmax", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    engine = tmp_path / "out" / "tiny.int8.cpu.ort.onnx"
    qdq, float_graph = qdq_sources(engine)
    onnx.save(conv_bn(channels=8, bias=False), str(float_graph))  # not the graph the Q/DQ was made from
    with pytest.raises(DeployResError, match=r"FP32 graph .*sha256"):
        qdq_sources(engine)
    qdq.write_bytes(qdq.read_bytes()[:-10])
    with pytest.raises(DeployResError, match=r"engine source .*sha256"):
        qdq_sources(engine)
