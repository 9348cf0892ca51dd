"""Issue 20 on a digits ResNet trained here: a TorchScript archive or a torch.export ``.pt2`` program as MODEL, and
every way the network is usually saved, taken through ``deployres run --int8 --labels``.

A program is exported to ONNX with outputs equal to the in-memory model and used as the PyTorch reference by
``validate`` and ``profile --torch``; a program file that changed after export, or a ``.pt2`` whose pickles would
import code, is one line.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cli_helpers import one_error_line, run_cli
from trained_nets import DIGITS_SIZE, digits_arrays, train_resnet

SIZE = f"3,{DIGITS_SIZE},{DIGITS_SIZE}"
DIGITS_PRE = ("--input-size", SIZE, "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")


@pytest.fixture(scope="module")
def digits():
    """(model, held-out inputs, labels): a 10-class ResNet [1,1,1,1] trained on the digits for 2 epochs."""
    train_x, test_x, train_y, test_y = digits_arrays()
    return train_resnet(train_x, train_y, classes=10, epochs=2), test_x, test_y


@pytest.fixture(scope="module")
def programs(digits, tmp_path_factory):
    """``{"torchscript": path, "export": path}``: the trained model saved by ``torch.jit.save`` and ``torch.export.save``."""
    model, test_x, _ = digits
    folder = tmp_path_factory.mktemp("programs")
    example = torch.from_numpy(test_x[:2])
    torch.jit.save(torch.jit.trace(model, example), folder / "digits.ts")
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    torch.export.save(program, folder / "digits.pt2")
    return {"torchscript": folder / "digits.ts", "export": folder / "digits.pt2"}


def _outputs_equal(onnx_path, model, x):
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.shape == (len(x), 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_program_exports_validates_and_profiles_against_itself(tmp_path, digits, programs, kind):
    model, test_x, test_y = digits
    source = programs[kind]
    out = tmp_path / "out"
    result = run_cli("export", source, "-o", out, *DIGITS_PRE, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    onnx_path = out / f"{source.stem}.onnx"
    _outputs_equal(onnx_path, model, test_x[:8])
    manifest = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text())
    assert manifest["model"]["program"]["kind"] == kind and manifest["model"]["weights"] is None
    assert manifest["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and manifest["input"]["shape"][1:] == [3, DIGITS_SIZE, DIGITS_SIZE]

    data = tmp_path / "digits.npz"
    np.savez(data, inputs=test_x, labels=test_y)
    result = run_cli("validate", onnx_path, "--data", data, "--json", tmp_path / "v.json", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "v.json").read_text())
    assert record["reference"]["kind"] == "pytorch" and record["outcome"] == "pass"
    assert record["evidence"] == "labelled" and record["inputs"]["samples"] == len(test_x)

    report = tmp_path / "report"
    result = run_cli("profile", onnx_path, "--torch", "--torch-modes", "eager", "--batches", "1", "--duration-s", "0.1", "--warmup-s", "0", "-o", report,
                     catch_exceptions=False)
    assert result.exit_code == 0, result.output
    labels = [a["label"] for a in json.loads((report / "profile.json").read_text())["artifacts"]]
    assert labels[-1] == "torch eager"


def test_program_changed_after_export_is_one_line(tmp_path, digits, programs):
    model, test_x, _ = digits
    source = tmp_path / "digits.ts"
    source.write_bytes(programs["torchscript"].read_bytes())
    out = tmp_path / "out"
    assert run_cli("export", source, "-o", out, *DIGITS_PRE).exit_code == 0
    torch.jit.save(torch.jit.trace(torch.nn.Sequential(model, torch.nn.ReLU()), torch.from_numpy(test_x[:2])), source)
    line = one_error_line(run_cli("validate", out / "digits.onnx", "--samples", "4"))
    assert "has changed since its manifest recorded it (sha256 differs)" in line and "re-export" in line


def test_program_refuses_weights_and_num_classes(tmp_path, programs):
    line = one_error_line(run_cli("export", programs["export"], "--num-classes", "3", "-o", tmp_path / "out", *DIGITS_PRE))
    assert "carries its own weights and head; drop --weights / --num-classes" in line
    assert not (tmp_path / "out").exists()


class _Payload:
    def __reduce__(self):
        return (print, ("code from the file ran",))


@pytest.mark.parametrize("where", ["torch.save archive", "opaque object"])
def test_pt2_whose_pickles_import_code_is_refused(tmp_path, programs, capsys, where):
    """A ``.pt2`` with a pickle naming ``builtins.print`` (inside a torch.save archive, which torch.export.load reads with
    ``weights_only=False``, or as an opaque constant, which it reads with ``pickle.loads``) is refused before it is loaded."""
    payload = pickle.dumps(_Payload(), protocol=4)
    hostile = tmp_path / "hostile.pt2"
    with zipfile.ZipFile(programs["export"]) as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if where == "torch.save archive" and data[:4] == b"PK\x03\x04":  # replace the inner archive's pickle
                inner_in, buffer = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
                with zipfile.ZipFile(buffer, "w") as inner_out:
                    for entry in inner_in.infolist():
                        inner_out.writestr(entry, payload if entry.filename.endswith("data.pkl") else inner_in.read(entry))
                data = buffer.getvalue()
            target.writestr(item, data)
        if where == "opaque object":
            target.writestr("digits/data/constants/opaque_obj_0", payload)
    line = one_error_line(run_cli("export", hostile, "-o", tmp_path / "out", *DIGITS_PRE))
    assert "whose pickles import builtins.print" in line and "--trust-pickle" in line
    assert "code from the file ran" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_run_refuses_too_small_calibration_arrays_before_the_export(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, inputs=np.zeros((8, 3, DIGITS_SIZE, DIGITS_SIZE), np.float32))
    result = run_cli("run", "resnet18", "--int8", "--calib-data", calib, "-o", tmp_path / "out")
    assert one_error_line(result) == (f"error: calibration data file {calib} holds 8 samples, fewer than the 128 asked for; "
                                      "add data or ask for fewer samples")
    assert not (tmp_path / "out").exists()


DIGITS_FACTORY = '''
from deploy_res.models.resnet import BasicBlock, ResNet


def digits_resnet(num_classes=1000):
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
'''


@pytest.mark.parametrize("kind", ["state_dict", "training", "dataparallel", "whole_pickle", "torchscript", "export"])
def test_every_file_kind_runs_to_validated_int8_engines_with_its_names(tmp_path, digits, programs, kind, monkeypatch):
    """Issue 20's done-when: each way the trained digits ResNet is saved goes through ``run MODEL --int8 --labels``
    to FP32 and INT8 engines that PASS, with the 10 classes and their names in every manifest, and the FP32 engine's
    outputs equal to the in-memory model's."""
    model, test_x, _ = digits
    (tmp_path / "digits10_net.py").write_text(DIGITS_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    state = model.state_dict()
    source, extra = "digits10_net:digits_resnet(num_classes=10)", []
    if kind in ("torchscript", "export"):
        source = str(programs[kind])
    else:
        checkpoint = {"state_dict": state, "training": {"epoch": 2, "model": state}, "dataparallel": {f"module.{k}": v for k, v in state.items()},
                      "whole_pickle": model}[kind]
        torch.save(checkpoint, tmp_path / "digits.pt")
        extra = ["--weights", tmp_path / "digits.pt"] + (["--trust-pickle"] if kind == "whole_pickle" else [])
    labels = tmp_path / "digits.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)))
    calib = tmp_path / "calib.npz"
    np.savez(calib, inputs=test_x[:64])
    out = tmp_path / "out"
    result = run_cli("run", source, *extra, "--int8", "--labels", labels, "-o", out, *DIGITS_PRE, "--calib-data", calib, "--calib-samples", "64",
                     "--batches", "1", "--duration-s", "0.1", "--backend", "onnxruntime", "--no-torch", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("fp32:", "int8:"))]
    assert len(lines) == 2 and all(line.endswith("PASS") for line in lines), result.output
    engines = sorted(out.glob("*.cpu.ort.onnx"))
    assert [p.name.split(".")[1] for p in engines] == ["fp32", "int8"]
    for engine in engines:
        manifest = json.loads(engine.with_name(engine.name + ".json").read_text())
        assert manifest["model"]["class_names"] == [f"digit {i}" for i in range(10)]
    _outputs_equal(engines[0], model, test_x[:8])
