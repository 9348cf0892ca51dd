"""Tiny engines and photo folders for the infer / Ray Data tests (tests/test_infer.py, tests/scale/)."""

from __future__ import annotations

from pathlib import Path

SIZE = (3, 64, 64)


def tiny_engine(folder: Path) -> Path:
    """resnet18 at 3x64x64 (TorchScript export, BN folded), built for ONNX Runtime on the CPU: the engine's path."""
    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.export import ExportSettings, export

    exported = export("resnet18", folder, ExportSettings(input_size=SIZE, exporter="torchscript"))
    return Path(build_engine(exported.final_path, folder, BuildSettings(backend="onnxruntime")).engine)


def photo_folder(folder: Path, count: int, classes: int = 0, seed: int = 0, size: int = 80) -> Path:
    """``count`` JPEG crops of scikit-image's photos; spread round-robin over ``classes`` sub-folders when > 0."""
    from deploy_res.data.photos import random_crops, _save

    folder.mkdir(parents=True, exist_ok=True)
    for index, crop in enumerate(random_crops(count, seed=seed, size=size)):
        target = folder / f"class_{index % classes}" if classes else folder
        target.mkdir(exist_ok=True)
        _save(crop, target / f"crop_{index:05d}.jpg", "jpg")
    return folder
