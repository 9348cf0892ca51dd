"""The names of the files deployres writes, in one place.

For the model ``resnet50`` exported into ``out/``::

    resnet50.onnx                      the raw export (BatchNorm kept)     source_stem("resnet50")
    resnet50.opt.onnx                  graph passes for onnxruntime        optimized_name(stem, "onnxruntime")
    resnet50.portable.opt.onnx         graph passes for portable           optimized_name(stem, "portable")
    resnet50.calib-percentile.json     the calibration ranges cache        calibration_cache_name(stem, "percentile")
    resnet50.fp16.onnxruntime.onnx     the FP16 ONNX for a backend         precision_onnx_name(stem, "fp16", "onnxruntime")
    resnet50.int8.onnxruntime.onnx     the Q/DQ ONNX in a layout           precision_onnx_name(stem, "int8", "onnxruntime")
    resnet50.fp32.cpu.ort.onnx         an ONNX Runtime engine              engine_name(stem, "fp32", "onnxruntime", "cpu")
    resnet50.int8.cpu.ov.xml           an OpenVINO engine (+ .bin, cache)  engine_name(stem, "int8", "openvino", "cpu")
    resnet50.fp16.plan                 a TensorRT engine                   engine_name(stem, "fp16", "tensorrt", "cuda")
    resnet50.fp32.cpu.ort.onnx.validation.json  its validation result  validation_result_path(engine)
    resnet50_fp32_onnxruntime          its Triton model                    served_name(engine, "onnxruntime", "fp32")

Every artifact's manifest is ``<file>.json`` beside it (:func:`deploy_res.core.manifest.manifest_path`).
"""

from __future__ import annotations

import re
from pathlib import Path

ENGINE_SUFFIXES = {"onnxruntime": ".{device}.ort.onnx", "openvino": ".{device}.ov.xml", "tensorrt": ".plan"}
"""Backend -> the end of its engine's file name (``{device}``: ``cpu`` or ``cuda``)."""

_QUALIFIERS = ("opt", "onnxruntime", "tensorrt", "openvino", "portable", "fp32", "fp16", "bf16", "int8", "cpu", "cuda", "ov", "ort")


def source_stem(source: str) -> str:
    """The stem for a model source: ``resnet50`` -> ``resnet50``; ``pkg.mod:make_net`` -> ``make_net``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", source.rsplit(":", 1)[-1].rsplit(".", 1)[-1]) or "model"


def model_stem(path: str | Path) -> str:
    """The model's stem in any of the names above: ``resnet50.tensorrt.opt.onnx`` -> ``resnet50``."""
    name = Path(path).name
    for suffix in (".plan", ".xml", ".onnx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"(\.(" + "|".join(_QUALIFIERS) + r"))+$", "", name) or Path(path).stem


def optimized_name(stem: str, passes: str) -> str:
    """The float graph after ``passes``' graph passes: ``resnet50.opt.onnx`` (onnxruntime) or ``resnet50.<passes>.opt.onnx``."""
    return f"{stem}.opt.onnx" if passes == "onnxruntime" else f"{stem}.{passes}.opt.onnx"


def optimized_beside(source: Path) -> Path:
    """``deployres optimize``'s default output for any ONNX file: ``model.onnx`` -> ``model.opt.onnx`` beside it."""
    return source.with_name(optimized_name(source.name[: -len(".onnx")] if source.name.endswith(".onnx") else source.name, "onnxruntime"))


def calibration_cache_name(stem: str, method: str) -> str:
    """The INT8 calibration ranges cache: ``resnet50.calib-percentile.json``."""
    return f"{stem}.calib-{method}.json"


def precision_onnx_name(stem: str, precision: str, layout: str) -> str:
    """The FP16 or Q/DQ ONNX an engine is built from: ``resnet50.int8.onnxruntime.onnx``."""
    return f"{stem}.{precision}.{layout}.onnx"


def engine_name(stem: str, precision: str, backend: str, device: str = "cpu") -> str:
    """An engine: ``resnet50.fp32.cpu.ort.onnx``, ``resnet50.int8.cpu.ov.xml``, ``resnet50.fp16.plan``."""
    return f"{stem}.{precision}" + ENGINE_SUFFIXES[backend].format(device=device)


def served_name(engine: str | Path, backend: str, precision: str) -> str:
    """A Triton model name for an engine: ``resnet50.fp32.cpu.ort.onnx`` -> ``resnet50_fp32_onnxruntime``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{model_stem(engine)}_{precision}_{backend}")


def validation_result_path(artifact: str | Path) -> Path:
    """``deployres validate``'s result beside the artifact it judged: ``resnet50.int8.cpu.ort.onnx.validation.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".validation.json")
