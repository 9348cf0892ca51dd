"""Shared fixtures: small exports cached per session, and the `gpu` marker's skip rule."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

SMALL_INPUT = {"inception_resnet_v2": (3, 107, 107)}
"""Reduced input sizes that keep each zoo model's structure (Inception-ResNet-v2 needs >= 75)."""
DEFAULT_SMALL = (3, 64, 64)


def small_input(name: str) -> tuple[int, int, int]:
    return SMALL_INPUT.get(name, DEFAULT_SMALL)


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt-cu12 on a machine with NVIDIA's index)"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU driver (nvidia-smi not found)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _gpu_skip_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    """``export_cache(name, **kw)`` -> ExportResult, exported once per session (no graph passes)."""
    from deploy_res.export import ExportSettings, export

    cache = {}
    root = tmp_path_factory.mktemp("exports")

    def get(name: str, exporter: str = "dynamo", input_size=None, optimize: bool = False):
        size = tuple(input_size or small_input(name))
        key = (name, exporter, size, optimize)
        if key not in cache:
            folder = root / f"{name}-{exporter}-{'x'.join(map(str, size))}-{int(optimize)}"
            cache[key] = export(name, folder, ExportSettings(input_size=size, exporter=exporter, optimize=optimize))
        return cache[key]

    return get
