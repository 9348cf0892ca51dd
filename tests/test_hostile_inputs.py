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


# --------------------------------------------------------------------------- checkpoints, images, arrays, lists


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Checkpoints a user might pass as --weights by mistake: text, a zip cut short, another model's, no weights."""
    import torch

    from deploy_res.models import create_model

    root = tmp_path_factory.mktemp("checkpoints")
    (root / "notes.pt").write_text("epoch 3, top-1 71.2\n")
    torch.save(create_model("resnet18").state_dict(), root / "full.pt")
    data = (root / "full.pt").read_bytes()
    (root / "cut.pt").write_bytes(data[: len(data) // 2])
    torch.save(create_model("resnet34").state_dict(), root / "resnet34.pt")
    torch.save({"epoch": 3}, root / "epoch.pt")
    return root


@pytest.mark.parametrize("weights, fragment", [
    ("notes.pt", "is not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle: it reads as text)"),
    ("cut.pt", "is a damaged zip archive"),
    ("resnet34.pt", "do not fit the model: keys 96 unexpected"),
    ("epoch.pt", "holds no state dict"),
])
@pytest.mark.parametrize("command", ["export", "run", "tune"])
def test_weights_that_are_not_the_models_checkpoint(checkpoints, built, tmp_path, weights, fragment, command):
    out = tmp_path / "out"
    extra = ("--data", built["images"], "--calib-samples", 16) if command == "tune" else ()
    refused(run_cli(command, "resnet18", "--weights", checkpoints / weights, "--input-size", "3,32,32", "--exporter", "torchscript", *extra, "-o", out),
            f"weights {weights} ", fragment)
    assert not out.exists()


def _damaged_images(folder: Path, source: Path) -> Path:
    """``folder`` with 30 good PNGs from ``source``, one JPEG cut short and one text file named .jpg."""
    folder.mkdir()
    for each in sorted(source.iterdir())[:30]:
        shutil.copy(each, folder / each.name)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "whole.jpg")
    (folder / "cut.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:200])
    (folder / "whole.jpg").unlink()
    (folder / "notes.jpg").write_text("not a photo")
    return folder


@pytest.mark.parametrize("command", ["validate", "infer", "build-engine"])
def test_an_image_folder_with_files_that_do_not_decode(built, tmp_path, command):
    images = _damaged_images(tmp_path / "images", built["images"])
    before = listing(images)
    out = tmp_path / "out"
    args = {"validate": ("validate", built["fp32"], "--data", images, "--json", out),
            "infer": ("infer", built["fp32"], "--data", images, "-o", tmp_path / "predictions.parquet"),
            "build-engine": ("build-engine", built["onnx"], "--backend", "onnxruntime", "--int8", "--calib-data", images, "--calib-samples", 32,
                             "-o", out / "engines")}[command]
    line = refused(run_cli(*args), "are not decodable images:", "cut.jpg", "--skip-bad-files")
    assert "skip_bad" not in line  # deployres' words, not the API's
    assert listing(tmp_path) == ["images", *(f"images/{name}" for name in before)]


def _arrays(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {"ints.npy": np.zeros((16, *SIZE), np.int64), "nan.npy": np.full((16, *SIZE), np.nan, np.float32),
             "small.npy": np.zeros((16, 3, 16, 16), np.float32)}
    for name, array in files.items():
        np.save(folder / name, array)
    (folder / "cut.npy").write_bytes((folder / "ints.npy").read_bytes()[:500])
    np.save(folder / "objects.npy", np.array([{"a": 1}] * 16, dtype=object), allow_pickle=True)
    np.savez(folder / "two.npz", a=np.zeros((16, *SIZE), np.float32), b=np.zeros((16, *SIZE), np.float32))
    return {p.name: p for p in folder.iterdir()}


@pytest.mark.parametrize("name, fragment", [
    ("ints.npy", "holds int64 data; the model input 'input' expects float32"),
    ("nan.npy", "16 of 16 samples hold NaN or Inf"),
    ("small.npy", "has shape (16, 3, 16, 16); the model input 'input' expects (N, 3, 32, 32)"),
    ("cut.npy", "cannot read"),
    ("objects.npy", "Object arrays cannot be loaded"),
    ("two.npz", "holds arrays ['a', 'b']; name the inputs 'input' or 'inputs'"),
])
@pytest.mark.parametrize("command", ["validate", "build-engine"])
def test_arrays_that_are_not_the_models_inputs(built, tmp_path, name, fragment, command):
    array = _arrays(tmp_path / "arrays")[name]
    out = tmp_path / "out"
    args = {"validate": ("validate", built["fp32"], "--data", array, "--json", out),
            "build-engine": ("build-engine", built["onnx"], "--backend", "onnxruntime", "--int8", "--calib-data", array, "--calib-samples", 16,
                             "-o", out / "engines")}[command]
    refused(run_cli(*args), fragment)
    assert not out.exists()


@pytest.mark.parametrize("columns, fragment", [
    ({"file": ["0.png"]}, "has columns ['file']; it needs a string 'path' column"),
    ({"path": [["0.png", "1.png"]]}, "its 'path' column holds list<"),
    ({"path": [1, 2]}, "its 'path' column holds int64"),
    ({"path": ["0.png", None]}, "its 'path' column has empty or null rows (first: row 1)"),
    ({"path": ["0.png", "gone.png"]}, "gone.png (no such file)"),
    ({"path": ["0.png"], "label": [-1]}, "the 'label' column must hold non-negative integers"),
    (None, "list.parquet as Parquet: Could not open Parquet input source"),
])
@pytest.mark.parametrize("command", ["validate", "infer"])
def test_a_parquet_list_that_is_not_a_list_of_images(built, tmp_path, columns, fragment, command):
    import pyarrow as pa
    import pyarrow.parquet as pq

    listed = tmp_path / "list.parquet"
    shutil.copy(built["images"] / "0.png", tmp_path / "0.png")
    if columns is None:
        listed.write_bytes(b"PAR1 this is not Parquet")
    else:
        pq.write_table(pa.table(columns), listed)
    out = tmp_path / ("out.parquet" if command == "infer" else "out.json")
    args = ("infer", built["fp32"], "--data", listed, "-o", out) if command == "infer" else ("validate", built["fp32"], "--data", listed, "--json", out)
    result = run_cli(*args)
    refused(result, fragment)
    assert result.output.startswith("error:")  # no progress bar's blank line before it when the output is no terminal
    assert not out.exists()


# ------------------------------------------------------------------------------------- caches and repositories


@pytest.mark.parametrize("damage", ["garbage{", '{"schema": 2, "ranges": 5}', "[1, 2]", "tampered"])
def test_a_damaged_calibration_cache_is_recomputed(built, tmp_path, damage):
    """A calibration cache that is unreadable, of another schema or edited (its sha256 no longer fits) is never
    trusted: the build recomputes it, says so, and the engine is the one a clean build gives."""
    folder = tmp_path / "engines"
    source = copy_with_manifest(built["onnx"], folder)
    args = ("build-engine", source, "--backend", "onnxruntime", "--int8", "--calib-data", built["calib"], "--calib-samples", 16, "-o", folder)
    assert run_cli(*args).exit_code == 0
    cache = next(folder.glob("*.calib-*.json"))
    clean = cache.read_text()
    if damage == "tampered":
        record = json.loads(clean)
        name = next(iter(record["ranges"]))
        record["ranges"][name] = [-1000.0, 1000.0]
        cache.write_text(json.dumps(record))
    else:
        cache.write_text(damage)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "recomputed" in result.output, result.output
    assert json.loads(cache.read_text())["ranges"] == json.loads(clean)["ranges"]


def test_overwrite_replaces_a_model_repository_never_another_folder(built, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused(run_cli("triton", built["fp32"], "-o", mine, "--overwrite"), "holds notes.txt, which is not a model folder with a config.pbtxt")
    assert listing(mine) == ["notes.txt"]
    repo = tmp_path / "repo"
    assert run_cli("triton", built["fp32"], "-o", repo, "--force").exit_code == 0  # --force: the engine was never validated
    result = run_cli("triton", built["fp32"], "-o", repo, "--overwrite", "--name", "again", "--force")
    assert result.exit_code == 0, result.output
    assert listing(repo)[0] == "again"


@pytest.mark.parametrize("content", ["not json", '{"stage": "build-engine"', "[]", '"int8"'])
def test_a_manifest_that_is_not_json(built, tmp_path, content):
    path = copy_with_manifest(built["fp32"], tmp_path / "engine")
    path.with_name(path.name + ".json").write_text(content)
    before = listing(tmp_path)
    refused(run_cli("validate", path, "--samples", 8, "--json", tmp_path / "out.json"), path.name + ".json")
    assert listing(tmp_path) == before


# ------------------------------------------------------------------------------------------ Ray actors' memory


def test_ray_actors_that_would_not_fit_in_the_clusters_memory(built):
    """The pool's memory is checked before any actor starts (the driver calls this with the cluster's resources)."""
    from deploy_res.core.errors import DeployResError
    from deploy_res.core.guards import actor_memory
    from deploy_res.core.manifest import read_manifest
    from deploy_res.scale.ray_data import _check_actor_memory, plan_actors

    each = actor_memory(built["fp32"], read_manifest(built["fp32"]), batch=32, copies=2)
    assert each > 32 * 2 * 4 * int(np.prod(SIZE))  # more than the inputs alone: the weights and activations count
    resources = {"CPU": 8.0, "memory": 3.5 * each}
    _check_actor_memory(plan_actors(resources, 3), each, resources)
    with pytest.raises(DeployResError, match=r"4 Ray actor\(s\) need about .* use --actors 3 or fewer"):
        _check_actor_memory(plan_actors(resources, 4), each, resources)
