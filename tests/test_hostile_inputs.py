"""Real mistakes through the command line (#21 item 5): each ends in exit code 2, exactly one ``error:`` line, no
traceback, and nothing written: the output folder or file is not created, a folder that was there is unchanged.

One small ResNet-18 (3x32x32 inputs, batch range 1..32) is exported and built once for the module; every case
that edits a manifest works on a copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

import deploy_res.core.guards as guards
from cli_helpers import one_error_line, run_cli

SIZE = (3, 32, 32)
QUICK_PROFILE = ("--iterations", 1, "--warmup-s", 0, "--layer-iterations", 0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``{"onnx", "fp32", "int8", "calib", "images"}``: the optimised export, its ONNX Runtime FP32 and INT8 engines
    (calibrated on 16 seeded arrays), those arrays, and a folder of 40 small PNGs."""
    from deploy_res.build import build_engine
    from deploy_res.build.settings import BuildSettings
    from deploy_res.export import ExportSettings, export

    root = tmp_path_factory.mktemp("hostile")
    exported = export("resnet18", root / "export", ExportSettings(input_size=SIZE, exporter="torchscript"))
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((16, *SIZE)).astype(np.float32))
    fp32 = build_engine(exported.final_path, root / "engines", BuildSettings(backend="onnxruntime"), quiet=True).engine
    int8 = build_engine(exported.final_path, root / "engines", BuildSettings(backend="onnxruntime", precision="int8", calib_data=calib,
                                                                          calib_samples=16), quiet=True).engine
    images = root / "images"
    images.mkdir()
    for index in range(40):  # more than the batch range holds
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{index}.png")
    return {"onnx": exported.final_path, "fp32": fp32, "int8": int8, "calib": calib, "images": images}


def copy_with_manifest(path: Path, folder: Path) -> Path:
    """``path`` and its manifest copied into ``folder`` (the copy's sha256 is the recorded one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for each in (path, path.with_name(path.name + ".json")):
        shutil.copy(each, folder / each.name)
    return folder / path.name


def edit_manifest(path: Path, edit) -> None:
    manifest_file = path.with_name(path.name + ".json")
    manifest = json.loads(manifest_file.read_text())
    edit(manifest)
    manifest_file.write_text(json.dumps(manifest))


def refused(result, *fragments: str) -> str:
    """The one error line of ``result`` (exit 2, no traceback), holding every fragment."""
    line = one_error_line(result)
    for fragment in fragments:
        assert fragment in line, line
    return line


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------------ batch range and memory


@pytest.mark.parametrize("command", ["profile", "validate", "infer"])
def test_a_batch_outside_the_exported_range(built, tmp_path, command):
    out = tmp_path / ("out.parquet" if command == "infer" else "out")
    args = {"profile": ("profile", built["fp32"], "--batches", 64, *QUICK_PROFILE, "-o", out),
            "validate": ("validate", built["fp32"], "--batch", 64, "--samples", 64, "--json", out),
            "infer": ("infer", built["fp32"], "--data", built["images"], "--batch", 64, "-o", out)}[command]
    refused(run_cli(*args), "is outside the batch range 1..32 this artifact was exported for", "--any-batch")
    assert not out.exists()


def test_any_batch_is_accepted_for_onnx_runtime(built, tmp_path):
    out = tmp_path / "result.json"
    result = run_cli("validate", built["fp32"], "--batch", 40, "--samples", 40, "--any-batch", "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["outcome"] == "pass"


def _little_memory(monkeypatch, artifact: Path, spare: int = 1 << 20) -> None:
    """This machine has the weights of ``artifact`` and ``spare`` bytes more (default 1 MiB), says the guard."""
    from deploy_res.core.manifest import read_manifest

    need = guards.footprint(artifact, read_manifest(artifact))
    monkeypatch.setattr(guards, "memory_available", lambda: (need.fixed + spare, "test"))


def test_profile_batch_beyond_memory(built, tmp_path, monkeypatch):
    _little_memory(monkeypatch, built["fp32"])
    out = tmp_path / "report"
    refused(run_cli("profile", built["fp32"], "--batches", "1,4096", "--any-batch", *QUICK_PROFILE, "-o", out),
            "batch 4096 needs about", "available (test)", "or less")
    assert not out.exists()


def test_validate_batch_beyond_memory(built, tmp_path, monkeypatch):
    _little_memory(monkeypatch, built["fp32"])
    out = tmp_path / "result.json"
    refused(run_cli("validate", built["fp32"], "--batch", 32, "--samples", 32, "--json", out), "--batch 32 needs about", "available (test)")
    assert not out.exists()


def test_random_samples_beyond_memory_are_refused_before_they_are_made(built, tmp_path):
    out = tmp_path / "result.json"
    refused(run_cli("validate", built["onnx"], "--samples", 10 ** 9, "--json", out), "--samples 1000000000 needs about")
    assert not out.exists()


# ----------------------------------------------------------------------- manifests the file contradicts


@pytest.mark.parametrize("engine, claim, fragment", [
    ("fp32", "int8", "manifest says precision int8 but resnet18.fp32.cpu.ort.onnx has no Q/DQ nodes and no FLOAT16 tensors (fp32)"),
    ("int8", "fp32", "manifest says precision fp32 but resnet18.int8.cpu.ort.onnx has 20 QLinearConv nodes"),
    ("fp32", "fp16", "(fp32)"),
])
@pytest.mark.parametrize("command", ["validate", "profile"])
def test_a_manifest_edited_to_claim_another_precision(built, tmp_path, engine, claim, fragment, command):
    path = copy_with_manifest(built[engine], tmp_path / "engine")
    edit_manifest(path, lambda m: m["settings"].update(precision=claim))
    before = listing(tmp_path)
    out = tmp_path / "out"
    args = ("validate", path, "--samples", 8, "--json", out) if command == "validate" else ("profile", path, "--batches", 1, *QUICK_PROFILE, "-o", out)
    refused(run_cli(*args), fragment, "the manifest does not describe this file; rebuild it with `deployres build-engine`")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["input"].update(shape=["batch", 3, 64, 64]), "manifest says input shape (?, 3, 64, 64) but resnet18.opt.onnx has input 'input' of shape (?, 3, 32, 32)"),
    (lambda m: m["input"].update(shape=["batch", 3, 32]), "manifest says input shape (?, 3, 32)"),
    (lambda m: m["input"].update(name="images"), "manifest says input 'images'"),
    (lambda m: m["output"].update(name="probabilities"), "manifest says output 'probabilities'"),
])
def test_a_manifest_edited_to_describe_other_inputs(built, tmp_path, edit, fragment):
    path = copy_with_manifest(built["onnx"], tmp_path / "model")
    edit_manifest(path, edit)
    before = listing(tmp_path)
    refused(run_cli("validate", path, "--samples", 8, "--json", tmp_path / "out.json"), fragment, "re-run `deployres optimize`")
    assert listing(tmp_path) == before


def test_an_engine_manifest_naming_another_backend(built, tmp_path):
    path = copy_with_manifest(built["fp32"], tmp_path / "engine")
    edit_manifest(path, lambda m: m["engine"].update(backend="openvino"))
    refused(run_cli("validate", path, "--samples", 8, "--json", tmp_path / "out.json"), "manifest says backend openvino", "not .xml")
    assert not (tmp_path / "out.json").exists()


# --------------------------------------------------------------------------------- files that are not what they say


@pytest.mark.parametrize("content, fragment", [(b"", "model.onnx is empty (0 bytes)"), (b"name,value\n1,2\n", "model.onnx is not an ONNX file")])
@pytest.mark.parametrize("command", ["validate", "build-engine", "profile"])
def test_an_empty_or_non_onnx_file(tmp_path, content, fragment, command):
    bad = tmp_path / "in" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes(content)
    out = tmp_path / "out"
    args = {"validate": ("validate", bad, "--json", out), "build-engine": ("build-engine", bad, "--backend", "onnxruntime", "-o", out),
            "profile": ("profile", bad, "--batches", 1, *QUICK_PROFILE, "-o", out)}[command]
    refused(run_cli(*args), fragment)
    assert not out.exists() and listing(tmp_path / "in") == ["model.onnx"]


def _one_op_onnx(path: Path, shape: list) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("shape, fragment", [(["batch", 3072], "takes input of shape (?, 3072) but resnet18.fp32.cpu.ort.onnx takes (?, 3, 32, 32)"),
                                             (["batch", 3, 64, 64], "takes input of shape (?, 3, 64, 64)")])
def test_a_reference_with_another_input(built, tmp_path, shape, fragment):
    reference = _one_op_onnx(tmp_path / "other.onnx", shape)
    out = tmp_path / "out.json"
    refused(run_cli("validate", built["fp32"], "--reference", reference, "--samples", 8, "--json", out), "reference other.onnx " + fragment)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ run


RUN_FAILING_AT_INT8 = ("resnet18", "--num-classes", 10, "--input-size", "3,32,32", "--exporter", "torchscript", "--backend", "onnxruntime",
                       "--int8", "--calib-samples", 16)
"""A run whose export, FP32 engine and FP32 validation succeed and whose INT8 calibration fails: arrays of 64x64."""


def test_run_failing_midway_leaves_no_folder(tmp_path):
    calib = tmp_path / "calib64.npy"
    np.save(calib, np.zeros((16, 3, 64, 64), np.float32))
    out = tmp_path / "out"
    refused(run_cli("run", *RUN_FAILING_AT_INT8, "--calib-data", calib, "-o", out), "calib64.npy has shape (16, 3, 64, 64)", "(N, 3, 32, 32)")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused(run_cli("run", *RUN_FAILING_AT_INT8, "--calib-data", calib, "-o", out))
    assert (out / "notes.txt").read_text() == "mine"  # a folder that was there is never removed
