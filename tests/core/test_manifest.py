"""The one manifest type: each concept read in one place, the old schema (version 1) still read."""

from __future__ import annotations

import json

import pytest

from deploy_res.core.manifest import SCHEMA_VERSION
from deploy_res.core.records import file_record
from deploy_res.core.manifest import Manifest, read_manifest, write_manifest
from deploy_res.core.errors import DeployResError


def _write(path, body):
    path.write_bytes(path.name.encode())
    return write_manifest(path, body.pop("stage"), body)


def test_every_stage_writes_its_parent_and_the_chain_leads_back_to_the_export(tmp_path):
    raw, opt, qdq, engine = (tmp_path / n for n in ("m.onnx", "m.opt.onnx", "m.int8.onnx", "m.int8.ort.onnx"))
    _write(raw, {"stage": "export", "model": {"source": "resnet18"}, "preprocessing": {"input_size": [3, 64, 64]}})
    _write(opt, {"stage": "optimize", "inputs": {"onnx": file_record(raw)}})
    _write(qdq, {"stage": "build-engine", "inputs": {"onnx": file_record(opt)}, "settings": {"precision": "int8"}})
    _write(engine, {"stage": "build-engine", "source": file_record(qdq), "engine": {"backend": "onnxruntime", "precision": "int8"}})
    manifest = read_manifest(engine)
    assert manifest["schema_version"] == SCHEMA_VERSION == 3
    assert manifest["parent"]["path"] == str(qdq.absolute()) and manifest.parent == manifest["parent"]
    assert [m.stage for m in manifest.ancestors()] == ["build-engine", "build-engine", "optimize", "export"]
    assert list(manifest.ancestors())[-1].model == {"source": "resnet18"}
    assert manifest.precision == "int8" and manifest.backend == "onnxruntime"
    assert read_manifest(qdq).precision == "int8" and read_manifest(qdq).backend is None
    assert read_manifest(raw).parent is None and read_manifest(raw).precision is None


@pytest.mark.parametrize("link", ["source", "inputs"])
def test_version_1_manifests_are_read(tmp_path, link):
    parent, child = tmp_path / "a.onnx", tmp_path / "b.onnx"
    parent.write_bytes(b"a")
    record = file_record(parent)
    child.write_bytes(b"b")
    body = {"schema_version": 1, "stage": "build-engine", "artifact": file_record(child),
            **({"source": record} if link == "source" else {"inputs": {"onnx": record}})}
    (tmp_path / "b.onnx.json").write_text(json.dumps(body))
    manifest = read_manifest(child)
    assert isinstance(manifest, Manifest) and manifest.parent == record


def test_verify_names_a_file_that_is_not_the_one_recorded(tmp_path):
    path = tmp_path / "m.onnx"
    _write(path, {"stage": "export"})
    manifest = read_manifest(path)
    assert manifest.verify(path) == path
    path.write_bytes(b"another model")
    with pytest.raises(DeployResError, match="m.onnx has changed since its manifest recorded it"):
        manifest.verify(path)
