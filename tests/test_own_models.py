"""Issue 20: the user's own model -- heads from the checkpoint, factories with literal arguments, whole pickled models refused."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cli_helpers import one_error_line, run_cli
from deploy_res.core.errors import DeployResError
from deploy_res.export import ExportSettings
from deploy_res.loading import load_manifest_model, load_model, parse_source
from deploy_res.pipeline import RunSettings

SMALL = ("--input-size", "3,64,64", "--exporter", "torchscript", "--no-optimize")


@pytest.fixture(scope="module")
def finetuned():
    """A ResNet-18 fine-tuned the tutorial's way: ``model.fc = nn.Linear(512, 10)``, the head set to known values."""
    model = load_model("resnet18", init_seed=5).module
    model.fc = torch.nn.Linear(512, 10)
    torch.nn.init.normal_(model.fc.weight, std=0.05)
    return model.eval()


def _save(obj, path, **kwargs):
    torch.save(obj, path, **kwargs)
    return path


def _manifest(folder):
    return json.loads((folder / "resnet18.onnx.json").read_text())


def _outputs_equal(onnx_path, module):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x).numpy()
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert got.shape == (2, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("wrap", ["state_dict", "training", "dataparallel"])
def test_export_takes_the_head_from_the_checkpoint(tmp_path, finetuned, wrap):
    state = finetuned.state_dict()
    checkpoint = {"state_dict": state, "training": {"epoch": 3, "model": state, "optimizer": torch.optim.SGD(finetuned.parameters(), lr=0.1).state_dict()},
                  "dataparallel": {f"module.{k}": v for k, v in state.items()}}[wrap]
    weights = _save(checkpoint, tmp_path / "ft10.pt")
    out = tmp_path / "out"
    result = run_cli("export", "resnet18", "--weights", weights, "-o", out, *SMALL, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "10-class head" in line]
    assert notes == ["resnet18 built with a 10-class head (fc: 512 -> 10) from ft10.pt's fc.weight (10, 512)"], result.output
    model = _manifest(out)["model"]
    assert model["num_classes"] == 10 and model["trust_pickle"] is False
    _outputs_equal(out / "resnet18.onnx", finetuned)
    rebuilt = load_manifest_model(model, weights).module  # what a later stage rebuilds from the manifest
    assert rebuilt.fc.out_features == 10
    assert torch.equal(rebuilt.fc.weight, finetuned.fc.weight)


def test_validate_rebuilds_the_finetuned_reference(tmp_path, finetuned):
    weights = _save(finetuned.state_dict(), tmp_path / "ft10.pt")
    out = tmp_path / "out"
    assert run_cli("export", "resnet18", "--weights", weights, "-o", out, *SMALL).exit_code == 0
    result = run_cli("validate", out / "resnet18.onnx", "--samples", "4", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output


def test_num_classes_without_weights_is_recorded_and_rebuilt(tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", "resnet18", "--num-classes", "7", "-o", out, *SMALL, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "resnet18 built with a 7-class head (fc: 512 -> 7) from --num-classes 7" in result.output
    model = _manifest(out)["model"]
    assert model["num_classes"] == 7
    first, again = load_model("resnet18", num_classes=7).module, load_manifest_model(model).module
    assert again.fc.out_features == 7 and all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_num_classes_contradicted_by_the_checkpoint_is_one_line(tmp_path, finetuned):
    weights = _save({"model": finetuned.state_dict(), "epoch": 3}, tmp_path / "ft10.pt")
    out = tmp_path / "out"
    line = one_error_line(run_cli("export", "resnet18", "--weights", weights, "--num-classes", "37", "-o", out, *SMALL))
    assert line == ("error: weights ft10.pt contradict --num-classes 37: fc.weight has shape (10, 512), a 10-class head; "
                    "drop --num-classes or pass 10")
    assert not out.exists() or not any(out.iterdir())


def test_matching_num_classes_is_accepted(finetuned, tmp_path):
    loaded = load_model("resnet18", _save(finetuned.state_dict(), tmp_path / "ft10.pt"), num_classes=10)
    assert loaded.num_classes == 10 and loaded.module.fc.out_features == 10


def test_other_mismatches_still_name_the_first_key(tmp_path, finetuned):
    state = finetuned.state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    line = one_error_line(run_cli("export", "resnet18", "--weights", _save(state, tmp_path / "bad.pt"), "-o", tmp_path / "out", *SMALL))
    assert line == "error: weights bad.pt do not fit the model: layer1.0.conv1.weight has shape (64, 64, 1, 1), model expects (64, 64, 3, 3)"
    del state["layer1.0.conv1.weight"]
    line = one_error_line(run_cli("export", "resnet18", "--weights", _save(state, tmp_path / "bad.pt"), "-o", tmp_path / "out", *SMALL))
    assert "1 missing (first: layer1.0.conv1.weight)" in line


def test_inception_resnet_v2_head_from_the_checkpoint(tmp_path):
    small = load_model("inception_resnet_v2", num_classes=5).module
    loaded = load_model("inception_resnet_v2", _save(small.state_dict(), tmp_path / "irv2.pt"))
    assert loaded.num_classes == 5 and loaded.module.classif.out_features == 5
    assert loaded.notes == ("inception_resnet_v2 built with a 5-class head (classif: 1536 -> 5) from irv2.pt's classif.weight (5, 1536)",)


def test_default_head_has_no_note():
    loaded = load_model("resnet18")
    assert loaded.num_classes == 1000 and loaded.notes == ()


# --- factories with literal arguments ---------------------------------------------------------------------------------

def test_parse_source_reads_literals_only():
    assert parse_source("factory_nets:small_net(3, width=4, pool='max')") == ("factory_nets", "small_net", (3,), {"width": 4, "pool": "max"})
    assert parse_source("a.b:c.d") == ("a.b", "c.d", (), {})
    assert parse_source("a:f(x=(1, 2), y=[None, True], z={'k': -1.5})")[3] == {"x": (1, 2), "y": [None, True], "z": {"k": -1.5}}


@pytest.mark.parametrize("source, message", [
    ("factory_nets:small_net(width=__import__('os').getpid())", "argument __import__('os').getpid() is not a Python literal"),
    ("factory_nets:small_net(width=W)", "argument W is not a Python literal"),
    ("factory_nets:small_net(*[1])", "argument *[1] is not a Python literal"),
    ("factory_nets:small_net(**{'width': 2})", "is not allowed; name each keyword argument"),
    ("factory_nets:small_net(width=", "the factory call does not parse"),
    ("factory_nets:small_net(1)(2)", "is not of the form package.module:factory(ARGS)"),
])
def test_non_literal_factory_argument_is_one_line(tmp_path, source, message, monkeypatch):
    called = []
    monkeypatch.setattr(os, "getpid", lambda: called.append(1) or 4)
    out = tmp_path / "out"
    line = one_error_line(run_cli("export", source, "-o", out, *SMALL))
    assert line.startswith("error: ") and message in line, line
    assert not called and not out.exists()


def test_factory_with_arguments_exports_and_is_rebuilt(tmp_path):
    source = "factory_nets:small_net(3, width=4, pool='max')"
    out = tmp_path / "out"
    result = run_cli("export", source, "-o", out, *SMALL, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "small_net.onnx.json").read_text())
    assert manifest["model"]["source"] == source
    rebuilt = load_manifest_model(manifest["model"]).module
    assert rebuilt.arguments == {"num_classes": 3, "width": 4, "pool": "max"}
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    got = ort.InferenceSession(str(out / "small_net.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, rebuilt(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_factory_num_classes_from_the_option_and_clash(tmp_path):
    assert load_model("factory_nets:small_net(width=4)", num_classes=6).module.arguments["num_classes"] == 6
    line = one_error_line(run_cli("export", "factory_nets:small_net(num_classes=3)", "--num-classes", "6", "-o", tmp_path / "o", *SMALL))
    assert line == "error: 'factory_nets:small_net(num_classes=3)' already sets num_classes=; drop --num-classes or the argument"


# --- whole pickled models and files that are no checkpoint -------------------------------------------------------------

@pytest.mark.parametrize("zipped", [True, False])
def test_whole_pickled_model_is_refused_by_default(tmp_path, finetuned, zipped):
    weights = _save(finetuned, tmp_path / "model.pt", _use_new_zipfile_serialization=zipped)
    out = tmp_path / "out"
    line = one_error_line(run_cli("export", "resnet18", "--weights", weights, "-o", out, *SMALL))
    assert line == ("error: weights model.pt is a whole pickled nn.Module (deploy_res.models.resnet.ResNet), not a state dict; it is refused "
                    "because loading it runs code from the file: save it with torch.save(model.state_dict(), PATH), "
                    "or pass --trust-pickle if you trust the file")
    assert not out.exists() or not any(out.iterdir())


def test_trust_pickle_loads_it_and_is_recorded(tmp_path, finetuned):
    weights = _save(finetuned, tmp_path / "model.pt")
    out = tmp_path / "out"
    result = run_cli("export", "resnet18", "--weights", weights, "--trust-pickle", "-o", out, *SMALL, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = _manifest(out)["model"]
    assert model["trust_pickle"] is True and model["num_classes"] == 10
    _outputs_equal(out / "resnet18.onnx", finetuned)
    assert load_manifest_model(model, weights).module.fc.out_features == 10


def test_pickled_objects_beside_tensors_are_refused(tmp_path, finetuned):
    weights = _save({"model": finetuned.state_dict(), "args": np.arange(3)}, tmp_path / "ckpt.pt")
    line = one_error_line(run_cli("export", "resnet18", "--weights", weights, "-o", tmp_path / "out", *SMALL))
    assert line.startswith("error: weights ckpt.pt holds pickled Python objects beside tensors (first: numpy.")
    assert "--trust-pickle" in line


@pytest.mark.parametrize("content, what", [
    (b"", "is an empty file, not a checkpoint"),
    (b"epoch,loss\n1,0.5\n", "is not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle: it reads as text)"),
    (bytes(range(1, 256)) * 4, "is not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)"),
])
def test_file_that_is_no_checkpoint_says_so(tmp_path, content, what):
    weights = tmp_path / "w.pt"
    weights.write_bytes(content)
    line = one_error_line(run_cli("export", "resnet18", "--weights", weights, "-o", tmp_path / "out", *SMALL))
    assert line == f"error: weights w.pt {what}; pass a checkpoint written by torch.save(model.state_dict(), PATH)"
    assert "weights_only" not in line


def test_torchscript_archive_as_weights_says_what_it_is(tmp_path):
    weights = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), weights)
    line = one_error_line(run_cli("export", "resnet18", "--weights", weights, "-o", tmp_path / "out", *SMALL))
    assert "is a TorchScript archive (torch.jit.save), not a checkpoint of weights" in line


# --- settings ----------------------------------------------------------------------------------------------------------

def test_settings_check_num_classes_and_trust():
    with pytest.raises(DeployResError, match="at least 1"):
        ExportSettings(num_classes=0)
    with pytest.raises(DeployResError, match="--trust-pickle goes with --weights"):
        ExportSettings(trust_pickle=True)
    with pytest.raises(DeployResError, match="--trust-pickle goes with --weights"):
        RunSettings(trust_pickle=True)
    settings = RunSettings(num_classes=10, weights=None)
    assert settings.export_settings(None).num_classes == 10


def test_cli_options_reach_the_settings():
    for command in ("export", "run"):
        result = run_cli(command, "-h")
        assert "--num-classes" in result.output and "--trust-pickle" in result.output


def test_run_with_a_finetuned_checkpoint(tmp_path, finetuned):
    """``deployres run`` on a 10-class checkpoint: export, build, validate and profile (torch included) all rebuild the 10-class model."""
    weights = _save({"epoch": 3, "model": finetuned.state_dict()}, tmp_path / "ft10.pt")
    out = tmp_path / "out"
    result = run_cli("run", "resnet18", "--weights", weights, "-o", out, "--input-size", "3,64,64", "--exporter", "torchscript",
                     "--duration-s", "0.1", "--batches", "1", "--backend", "onnxruntime", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "resnet18 built with a 10-class head (fc: 512 -> 10) from ft10.pt's fc.weight (10, 512)" in result.output
    assert "fp32: cosine 1.0000" in result.output
    assert _manifest(out)["model"]["num_classes"] == 10
    report = json.loads((out / "report" / "profile.json").read_text())
    assert [a["label"] for a in report["artifacts"]][-1] == "torch eager"
    _outputs_equal(out / "resnet18.onnx", finetuned)
