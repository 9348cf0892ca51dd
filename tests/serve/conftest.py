"""Fixtures for the Triton tests: one small validated ONNX Runtime engine (resnet18 at 64x64), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def served_engine(tmp_path_factory, export_cache) -> Path:
    """A resnet18 (3x64x64) ONNX Runtime FP32 engine with a passing ``.validation.json`` beside it."""
    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.validation import ValidateSettings, validate

    exported = export_cache("resnet18", exporter="torchscript")
    folder = tmp_path_factory.mktemp("serve-engine")
    built = build_engine(exported.onnx_path, folder, BuildSettings(backend="onnxruntime"), quiet=True)
    assert validate(built.engine, ValidateSettings(samples=8, batch=8))["passed"]
    return built.engine


@pytest.fixture(scope="session")
def served_openvino_engine(tmp_path_factory, export_cache) -> Path:
    """The same resnet18 as an OpenVINO FP32 engine (IR + cache), validated; skipped without openvino."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.validation import ValidateSettings, validate

    exported = export_cache("resnet18", exporter="torchscript")
    folder = tmp_path_factory.mktemp("serve-openvino")
    built = build_engine(exported.onnx_path, folder, BuildSettings(backend="openvino"), quiet=True)
    assert validate(built.engine, ValidateSettings(samples=8, batch=8))["passed"]
    return built.engine
