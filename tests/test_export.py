"""The export stage: ONNX files that match PyTorch, manifests, and no half-written files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deploy_res.core.errors import DeployResError, ValidationFailed
from deploy_res.export import ExportSettings, export
from deploy_res.models import list_models
from deploy_res.exporters.torch_export import BatchRange


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


@pytest.mark.slow
def test_resnet50_full_size_export(tmp_path):
    result = export("resnet50", tmp_path, ExportSettings(optimize=False))
    manifest = json.loads((tmp_path / "resnet50.onnx.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest | {k: manifest[k] for k in ("schema_version", "stage", "artifact", "versions")}))
    parity = manifest["check"]["parity"]
    assert parity["passed"] and [b["batch"] for b in parity["batches"]] == [1, 4]
    assert all(b["max_rel_error"] <= 1e-3 for b in parity["batches"])
    assert manifest["model"]["parameters"] == 25_557_032
    assert manifest["input"]["shape"] == ["batch", 3, 224, 224]
    assert manifest["preprocessing"]["resize_size"] == 256
    assert manifest["artifact"]["sha256"] and manifest["versions"]["torch"].startswith("2.")
    graph = onnx.load(str(result.onnx_path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert sum(n.op_type == "BatchNormalization" for n in graph.node) == 53  # folding is the passes' job


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_exports_with_parity(name, export_cache):
    result = export_cache(name)
    parity = result.manifest["check"]["parity"]
    assert parity["passed"], parity
    assert "BatchNormalization" in _op_types(result.onnx_path)


def test_torchscript_exporter_keeps_batchnorm(export_cache):
    result = export_cache("resnet18", exporter="torchscript")
    assert result.manifest["check"]["parity"]["passed"]
    assert "BatchNormalization" in _op_types(result.onnx_path)


def test_dynamic_batch_runs_any_size(export_cache):
    session = ort.InferenceSession(str(export_cache("resnet18").onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        assert session.run(None, {"input": np.zeros((batch, 3, 64, 64), np.float32)})[0].shape == (batch, 1000)


def test_checkpoint_round_trip(tmp_path):
    """Trained-looking weights saved in a wrapper come out of the ONNX file unchanged."""
    from deploy_res.loading import load_model

    model = load_model("resnet18").module
    torch.manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 90}, ckpt)
    result = export("resnet18", tmp_path / "out", ExportSettings(weights=ckpt, input_size=(3, 64, 64), exporter="torchscript", optimize=False))
    assert result.manifest["model"]["weights"]["sha256"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, rtol=1e-3, atol=1e-3)


def test_failed_parity_leaves_nothing(tmp_path):
    with pytest.raises(ValidationFailed, match="differs from PyTorch"):
        export("resnet18", tmp_path, ExportSettings(input_size=(3, 64, 64), exporter="torchscript", optimize=False, rtol=0.0))
    assert list(tmp_path.iterdir()) == []


def test_interrupt_during_save_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export("resnet18", tmp_path, ExportSettings(input_size=(3, 64, 64), exporter="torchscript", optimize=False))
    assert list(tmp_path.iterdir()) == []


def test_bad_batch_range():
    with pytest.raises(DeployResError, match="1 <= min <= opt <= max"):
        BatchRange(8, 4, 32)


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DeployResError, match="choose a writable"):
        export("resnet18", blocker / "sub")
